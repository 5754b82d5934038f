package main

import (
	"fmt"
	"log/slog"
	"os"
	"runtime/pprof"
	"time"

	"github.com/spf13/cobra"

	"github.com/lifeboat-backup/lifeboat/kube"
	"github.com/lifeboat-backup/lifeboat/kube/bridge"
	"github.com/lifeboat-backup/lifeboat/rbd"
)

// globals are the flags every command shares.
type globals struct {
	kubeconfig  string
	namespace   string
	output      string
	configMap   string
	secret      string
	driver      string
	snapPrefix  string
	cephTimeout time.Duration
	kubeTimeout time.Duration
	cephConf    string
	cephUser    string
	cephKeyring string
	logLevel    string
	cpuProfile  string
}

func newRootCmd() *cobra.Command {
	g := &globals{}
	root := &cobra.Command{
		Use:   "lifeboat",
		Short: "Backups of Ceph RBD CSI snapshots that survive the loss of Ceph",
		Long: `lifeboat bridges Kubernetes CSI snapshots of ceph-csi RBD volumes to their RBD images,
verifies them, exports them to S3 and restores them; "lifeboat run" does it as an agent.

Exit codes: 0 all good, 1 problems found, 2 could not check (unreachable API server or Ceph,
bad credentials, bad flags).`,
		SilenceUsage:  true,
		SilenceErrors: true,
		PersistentPreRunE: func(cmd *cobra.Command, _ []string) error {
			if err := g.validate(); err != nil {
				return err
			}
			return g.start()
		},
	}
	f := root.PersistentFlags()
	f.StringVar(&g.kubeconfig, "kubeconfig", "", "kubeconfig file (default: $KUBECONFIG, ~/.kube/config, or in-cluster)")
	f.StringVarP(&g.namespace, "namespace", "n", kube.DefaultNamespace, "namespace of ceph-csi's ConfigMap and Secret (Rook's operator namespace)")
	f.StringVarP(&g.output, "output", "o", "table", "output format: table, json or yaml")
	f.StringVar(&g.configMap, "csi-config-map", kube.DefaultConfigMap, "ConfigMap with ceph-csi's cluster list")
	f.StringVar(&g.secret, "ceph-secret", kube.DefaultSecret, "Secret with the cephx userID/userKey to use")
	f.StringVar(&g.driver, "driver-suffix", kube.DefaultDriverSuffix, "CSI driver names ending in this are RBD drivers")
	f.StringVar(&g.snapPrefix, "snapshot-prefix", rbd.DefaultSnapshotPrefix, "name prefix of ceph-csi snapshot images (VolumeSnapshotClass snapshotNamePrefix)")
	f.DurationVar(&g.cephTimeout, "ceph-timeout", rbd.DefaultTimeout, "timeout for connecting to Ceph and for each Ceph operation")
	f.DurationVar(&g.kubeTimeout, "kube-timeout", kube.DefaultTimeout, "timeout of each Kubernetes API request")
	f.StringVar(&g.cephConf, "ceph-conf", "", "use this ceph.conf for every cluster instead of ceph-csi's monitors and Secret")
	f.StringVar(&g.cephUser, "ceph-user", "", "cephx user (without client.) with --ceph-conf; default from the conf")
	f.StringVar(&g.cephKeyring, "ceph-keyring", "", "keyring file with --ceph-conf; default from the conf")
	f.StringVar(&g.logLevel, "log-level", "warn", "log level: debug, info, warn or error")
	f.StringVar(&g.cpuProfile, "cpu-profile", "", "write a Go CPU profile to this file (for performance work)")
	_ = f.MarkHidden("cpu-profile")
	root.PersistentPostRun = func(*cobra.Command, []string) { pprof.StopCPUProfile() }

	root.AddCommand(newResolveCmd(g), newVerifyCmd(g), newExportCmd(g), newRestoreCmd(g), newCatCmd(g),
		newBackupsCmd(g), newRepoCmd(g), newRunCmd(g), newVersionCmd())
	return root
}

func (g *globals) validate() error {
	switch g.output {
	case "table", "json", "yaml":
	default:
		return fmt.Errorf("--output %q: use table, json or yaml", g.output)
	}
	if _, err := g.level(); err != nil {
		return err
	}
	if g.cephTimeout <= 0 || g.kubeTimeout <= 0 {
		return fmt.Errorf("--ceph-timeout and --kube-timeout must be positive")
	}
	if (g.cephUser != "" || g.cephKeyring != "") && g.cephConf == "" {
		return fmt.Errorf("--ceph-user and --ceph-keyring go with --ceph-conf")
	}
	if g.cephConf != "" {
		if _, err := os.Stat(g.cephConf); err != nil {
			return fmt.Errorf("--ceph-conf: %w", err)
		}
	}
	return nil
}

func (g *globals) level() (slog.Level, error) {
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(g.logLevel)); err != nil {
		return lvl, fmt.Errorf("--log-level %q: use debug, info, warn or error", g.logLevel)
	}
	return lvl, nil
}

// start installs the logger at --log-level and starts the --cpu-profile,
// once the flags are valid.
func (g *globals) start() error {
	lvl, _ := g.level()
	slog.SetDefault(slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: lvl})))
	if g.cpuProfile == "" {
		return nil
	}
	f, err := os.Create(g.cpuProfile)
	if err != nil {
		return fmt.Errorf("--cpu-profile: %w", err)
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		return fmt.Errorf("--cpu-profile: %w", err)
	}
	return nil
}

// bridge connects to Kubernetes and prepares (lazy) Ceph connections.
//
// With --ceph-conf, Kubernetes is optional: commands that only touch Ceph
// and S3 (export --image, restore, cat) work without an API server.
func (g *globals) bridge() (*bridge.Bridge, error) {
	var clients *kube.Clients
	cfg, err := kube.RESTConfig(g.kubeconfig, g.kubeTimeout)
	if err == nil {
		clients, err = kube.NewClients(cfg)
	}
	if err != nil && g.cephConf == "" {
		return nil, err
	}
	opts := bridge.Options{
		Namespace: g.namespace, ConfigMap: g.configMap, Secret: g.secret, DriverSuffix: g.driver,
		SnapshotPrefix: g.snapPrefix, CephTimeout: g.cephTimeout,
	}
	if g.cephConf != "" {
		opts.Override = &rbd.ClusterConfig{ConfFile: g.cephConf, User: g.cephUser, Keyring: g.cephKeyring, Timeout: g.cephTimeout}
	}
	return bridge.New(clients, opts), nil
}
