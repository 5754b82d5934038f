package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/spf13/cobra"
	"k8s.io/apimachinery/pkg/labels"

	"github.com/lifeboat-backup/lifeboat/kube"
	"github.com/lifeboat-backup/lifeboat/kube/controller"
	"github.com/lifeboat-backup/lifeboat/objectstore"
	"github.com/lifeboat-backup/lifeboat/rbd"
)

// runFlags are `lifeboat run`'s own settings; the config file's agent:
// section fills in what the command line does not say.
type runFlags struct {
	workers        int
	export         bool
	selector       string
	include        []string
	exclude        []string
	verifyInterval time.Duration
	leaseNamespace string
	leaseName      string
	identity       string
	metricsAddress string
	retention      *objectstore.Policy
	veleroNS       string
	veleroLookback time.Duration
	veleroInterval time.Duration
}

func newRunCmd(g *globals) *cobra.Command {
	rf := &repoFlags{}
	r := &runFlags{}
	cmd := &cobra.Command{
		Use:   "run --config FILE",
		Short: "Run the agent: verify and export every Velero CSI snapshot of an RBD volume",
		Long: `run watches VolumeSnapshotContents of ceph-csi's RBD driver and, for each one that is ready
and matches the policy (a label selector, default: has velero.io/backup-name; namespace lists),
verifies its image and exports it to the repository, recording the outcome in annotations
(lifeboat.io/phase, backup-id, verified, exported-at, error) and Events. It verifies everything
and looks for orphans periodically, serves Prometheus metrics, /healthz and /readyz, and works
only while it holds the leader Lease, so several replicas are safe.

Every setting is checked at start; a bad one is a clear error and exit code 2.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := rf.resolve(cmd); err != nil {
				return err
			}
			if err := r.merge(cmd, rf.file.Agent, g); err != nil {
				return err
			}
			return r.run(cmd.Context(), g, rf)
		},
	}
	addRepoFlags(cmd, rf)
	f := cmd.Flags()
	f.IntVar(&r.workers, "workers", 2, "snapshots worked on at once")
	f.BoolVar(&r.export, "export", true, "export snapshots (false: only verify)")
	f.StringVar(&r.selector, "selector", kube.VeleroBackupLabel, "label selector of the VolumeSnapshotContents to back up")
	f.StringSliceVar(&r.include, "include-namespaces", nil, "only snapshots of these namespaces")
	f.StringSliceVar(&r.exclude, "exclude-namespaces", nil, "never snapshots of these namespaces")
	f.DurationVar(&r.verifyInterval, "verify-interval", time.Hour, "how often to verify all snapshots and look for orphans (0: never)")
	f.StringVar(&r.leaseNamespace, "lease-namespace", "", "namespace of the leader Lease (default: the pod's, else --namespace)")
	f.StringVar(&r.leaseName, "lease-name", "lifeboat", "name of the leader Lease")
	f.StringVar(&r.identity, "identity", "", "leader election identity (default: the pod name, else the hostname)")
	f.StringVar(&r.metricsAddress, "metrics-address", ":9090", "address for /metrics, /healthz and /readyz")
	f.StringVar(&r.veleroNS, "velero-namespace", "velero", "Velero's namespace, whose completed backups are read for snapshots never exported (\"\": never)")
	f.DurationVar(&r.veleroLookback, "velero-lookback", 7*24*time.Hour, "how far back Velero's completed backups are read (0: never)")
	f.DurationVar(&r.veleroInterval, "velero-interval", 10*time.Minute, "how often Velero's backups are read")
	return cmd
}

// merge fills unset flags from the config file and validates.
func (r *runFlags) merge(cmd *cobra.Command, a agentConfig, g *globals) error {
	changed := cmd.Flags().Changed
	if a.Workers != nil && !changed("workers") {
		r.workers = *a.Workers
	}
	if a.Export != nil && !changed("export") {
		r.export = *a.Export
	}
	if a.Selector != nil && !changed("selector") {
		r.selector = *a.Selector
	}
	if a.IncludeNamespaces != nil && !changed("include-namespaces") {
		r.include = a.IncludeNamespaces
	}
	if a.ExcludeNamespaces != nil && !changed("exclude-namespaces") {
		r.exclude = a.ExcludeNamespaces
	}
	if a.VerifyInterval != "" && !changed("verify-interval") {
		d, err := time.ParseDuration(a.VerifyInterval)
		if err != nil {
			return fmt.Errorf("agent.verifyInterval %q: %v (e.g. 30m, 1h)", a.VerifyInterval, err)
		}
		r.verifyInterval = d
	}
	if a.VeleroNamespace != nil && !changed("velero-namespace") {
		r.veleroNS = *a.VeleroNamespace
	}
	for _, d := range []struct {
		key, flag, val string
		to             *time.Duration
	}{{"agent.veleroLookback", "velero-lookback", a.VeleroLookback, &r.veleroLookback}, {"agent.veleroInterval", "velero-interval", a.VeleroInterval, &r.veleroInterval}} {
		if d.val == "" || changed(d.flag) {
			continue
		}
		v, err := time.ParseDuration(d.val)
		if err != nil {
			return fmt.Errorf("%s %q: %v (e.g. 168h, 10m)", d.key, d.val, err)
		}
		*d.to = v
	}
	if a.LeaseName != "" && !changed("lease-name") {
		r.leaseName = a.LeaseName
	}
	if a.MetricsAddress != "" && !changed("metrics-address") {
		r.metricsAddress = a.MetricsAddress
	}
	if a.CSIConfigMap != "" && !cmd.Flags().Changed("csi-config-map") {
		g.configMap = a.CSIConfigMap
	}
	if a.CephSecret != "" && !cmd.Flags().Changed("ceph-secret") {
		g.secret = a.CephSecret
	}
	if a.Retention != nil {
		p, err := a.Retention.policy()
		if err != nil {
			return err
		}
		r.retention = p
	}
	if r.workers < 1 {
		return fmt.Errorf("workers must be at least 1, not %d", r.workers)
	}
	if r.verifyInterval < 0 || r.veleroLookback < 0 {
		return fmt.Errorf("verify interval and Velero lookback must not be negative")
	}
	if r.veleroInterval <= 0 {
		return fmt.Errorf("Velero interval must be positive, not %s", r.veleroInterval)
	}
	if _, err := labels.Parse(r.selector); err != nil {
		return fmt.Errorf("selector %q: %v", r.selector, err)
	}
	if _, _, err := net.SplitHostPort(r.metricsAddress); err != nil {
		return fmt.Errorf("metrics address %q: %v", r.metricsAddress, err)
	}
	if r.leaseNamespace == "" {
		r.leaseNamespace = podNamespace(g.namespace)
	}
	if r.identity == "" {
		r.identity, _ = os.Hostname()
		if p := os.Getenv("POD_NAME"); p != "" {
			r.identity = p
		}
	}
	return nil
}

// podNamespace is the namespace this pod runs in, from its service
// account, else def.
func podNamespace(def string) string {
	if b, err := os.ReadFile("/var/run/secrets/kubernetes.io/serviceaccount/namespace"); err == nil && len(b) > 0 {
		return string(b)
	}
	return def
}

func (r *runFlags) run(ctx context.Context, g *globals, rf *repoFlags) error {
	b, err := g.bridge()
	if err != nil {
		return err
	}
	defer b.Close()
	if b.Kube == nil {
		return errors.New("lifeboat run needs the Kubernetes API: use --kubeconfig or run in a pod")
	}
	// Fail at start, not at the first snapshot, when Ceph's credentials or
	// cluster list are missing.
	if g.cephConf == "" {
		if _, err := b.Kube.CephCredentials(ctx, g.namespace, g.secret); err != nil {
			return err
		}
		if _, err := b.Kube.CSIClusters(ctx, g.namespace, g.configMap); err != nil {
			return err
		}
	}
	sel, _ := labels.Parse(r.selector)
	m := controller.NewMetrics()
	var ready atomic.Bool
	srv, err := serveMetrics(r.metricsAddress, m, &ready)
	if err != nil {
		return err
	}
	defer srv.Close()
	repo, err := openWaiting(ctx, rf, m)
	if err != nil {
		return err
	}
	cfg := controller.Config{Workers: r.workers, Export: r.export, Selector: sel, IncludeNamespaces: r.include,
		ExcludeNamespaces: r.exclude, VerifyInterval: r.verifyInterval, Parallel: rf.parallel, DriverSuffix: g.driver,
		Retention: r.retention, VeleroNamespace: r.veleroNS, VeleroLookback: r.veleroLookback, VeleroInterval: r.veleroInterval}
	ctrl := controller.New(cfg, controller.NewDeps(b.Kube, b, repo, m))
	m.ObjectstoreUp.Set(1)
	ready.Store(true)
	slog.Info("lifeboat agent starting", "version", version, "repository", repo.Config().ID[:12], "workers", r.workers,
		"export", r.export, "retention", r.retention != nil, "selector", r.selector, "lease", r.leaseNamespace+"/"+r.leaseName, "identity", r.identity,
		"cephConnections", rbd.ConnectionsOpened())
	return controller.RunLeading(ctx, b.Kube, r.leaseNamespace, r.leaseName, r.identity, m, ctrl.Run)
}

// openWaiting opens the repository, waiting out an S3 outage at start (a
// pod restarted into one would otherwise crash-loop): the endpoint
// unreachable or answering 5xx is retried with backoff up to a minute,
// lifeboat_objectstore_up 0 and /readyz failing meanwhile; anything else
// (no bucket, no repository, a wrong key or credentials) is an error now.
func openWaiting(ctx context.Context, rf *repoFlags, m *controller.Metrics) (*objectstore.Repository, error) {
	wait := 2 * time.Second
	for {
		repo, err := rf.open(ctx, nil)
		if err == nil || !(errors.Is(err, objectstore.ErrUnreachable) || errors.Is(err, objectstore.ErrUnavailable)) {
			return repo, err
		}
		m.ObjectstoreUp.Set(0)
		slog.Warn("S3 is down: waiting for it to open the repository", "retryIn", wait, "err", err)
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(wait):
		}
		wait = min(2*wait, time.Minute)
	}
}

func serveMetrics(addr string, m *controller.Metrics, ready *atomic.Bool) (*http.Server, error) {
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(m.Registry, promhttp.HandlerOpts{Registry: m.Registry}))
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, "ok") })
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, _ *http.Request) {
		if !ready.Load() {
			http.Error(w, "starting", http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ok")
	})
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("metrics address %s: %w", addr, err)
	}
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	return srv, nil
}
