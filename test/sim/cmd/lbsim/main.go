// Command lbsim drives the ceph-csi + Velero simulator (package test/sim)
// against the local stack: it plays Rook, ceph-csi and Velero for demos.
//
//	lbsim [global flags] rook
//	lbsim [global flags] volume NS/PVC SIZE [--fill SPEC] [--seed N]
//	lbsim [global flags] snapshot NS/PVC [--backup NAME] [--sha256]
//	lbsim [global flags] write NS/PVC --offset OFF --length LEN [--seed N] [--kind random]
//	lbsim [global flags] restore NS/VOLUMESNAPSHOT NS/PVC
//	lbsim [global flags] sha256 NS/PVC | sha256 --snapshot NS/VOLUMESNAPSHOT
//	lbsim [global flags] delete NS/PVC
//	lbsim [global flags] cleanup NS
//
// Global flags: --env FILE (default $LIFEBOAT_STACK_DIR/env), --pool,
// --rados-namespace, --cluster-id, --features. Results are printed as
// KEY=value lines. Volumes and snapshots are found from the Kubernetes
// objects (PVC -> PV volumeHandle -> journal), never from local state.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"time"

	"github.com/lifeboat-backup/lifeboat/test/sim"
)

const usage = `usage: lbsim [global flags] COMMAND [args]

commands:
  rook                                  install Rook's ConfigMap rook-ceph-csi-config and
                                        Secret rook-csi-rbd-provisioner from the stack env
  volume NS/PVC SIZE [--fill SPEC] [--seed N]
                                        create a ceph-csi volume + bound PV/PVC and fill it;
                                        SPEC is KIND:LEN[@OFF],... with KIND random, text,
                                        hole, zero or discard (e.g. random:64M,text:32M,hole:16M)
  snapshot NS/PVC [--backup NAME] [--sha256]
                                        take a ceph-csi snapshot the way Velero's CSI plugin
                                        asks for it; prints VSC, VS, handle and image
  write NS/PVC --offset OFF --length LEN [--seed N] [--kind KIND]
                                        overwrite a range with generated data
  restore NS/VOLUMESNAPSHOT NS/PVC      create a PVC from a snapshot (clone like ceph-csi)
  sha256 NS/PVC                         SHA-256 of the volume (head)
  sha256 --snapshot NS/VOLUMESNAPSHOT   SHA-256 of a snapshot, read through its parent
  delete NS/PVC                         delete the PVC, PV and image (trash if snapshots remain)
  cleanup NS                            delete every simulated snapshot and volume in NS, their
                                        images (trash included) and the namespace

global flags:
`

func main() {
	global := flag.NewFlagSet("lbsim", flag.ExitOnError)
	envFile := global.String("env", sim.EnvPath(), "stack env file")
	pool := global.String("pool", "", "RBD pool (default "+sim.DefaultPool+")")
	radosNS := global.String("rados-namespace", "", "RADOS namespace (created if missing)")
	clusterID := global.String("cluster-id", "", "ceph-csi clusterID (default "+sim.DefaultClusterID+")")
	features := global.String("features", "", "volume image features (default "+sim.DefaultVolumeFeatures+")")
	global.Usage = func() {
		fmt.Fprint(global.Output(), usage)
		global.PrintDefaults()
	}
	global.Parse(os.Args[1:])
	if global.NArg() == 0 {
		global.Usage()
		os.Exit(2)
	}
	env, err := sim.LoadEnvFile(*envFile)
	if err != nil {
		fatalf("%v (run `make stack-up`)", err)
	}
	opts := env.Options()
	if *pool != "" {
		opts.Pool = *pool
	}
	opts.RadosNamespace = *radosNS
	if *clusterID != "" {
		opts.ClusterID = *clusterID
	}
	if *features != "" {
		opts.VolumeFeatures = *features
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	s, err := sim.New(ctx, opts)
	if err != nil {
		fatalf("%v", err)
	}
	defer s.Close()

	cmd, args := global.Arg(0), global.Args()[1:]
	switch cmd {
	case "rook":
		err = cmdRook(ctx, s, env, args)
	case "volume":
		err = cmdVolume(ctx, s, args)
	case "snapshot":
		err = cmdSnapshot(ctx, s, args)
	case "write":
		err = cmdWrite(ctx, s, args)
	case "restore":
		err = cmdRestore(ctx, s, args)
	case "sha256":
		err = cmdSHA256(ctx, s, args)
	case "delete":
		err = cmdDelete(ctx, s, args)
	case "cleanup":
		err = cmdCleanup(ctx, s, args)
	default:
		global.Usage()
		s.Close()
		os.Exit(2)
	}
	if err != nil {
		s.Close()
		fatalf("%s: %v", cmd, err)
	}
}

func fatalf(format string, a ...any) {
	fmt.Fprintf(os.Stderr, "lbsim: "+format+"\n", a...)
	os.Exit(1)
}

// parse parses flags that may come before, between or after positional
// arguments and checks the number of positionals.
func parse(fs *flag.FlagSet, args []string, want int) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		if fs.NArg() == 0 {
			break
		}
		pos = append(pos, fs.Arg(0))
		args = fs.Args()[1:]
	}
	if len(pos) != want {
		return nil, fmt.Errorf("want %d argument(s), got %d: %q", want, len(pos), pos)
	}
	return pos, nil
}

func splitNS(s string) (string, string, error) {
	ns, name, ok := strings.Cut(s, "/")
	if !ok || ns == "" || name == "" {
		return "", "", fmt.Errorf("%q: want NAMESPACE/NAME", s)
	}
	return ns, name, nil
}

func kv(k string, v any) { fmt.Printf("%s=%v\n", k, v) }

func printVolume(v *sim.Volume) {
	kv("PVC", v.Namespace+"/"+v.PVC)
	kv("PV", v.PV)
	kv("VOLUME_HANDLE", v.Handle)
	kv("IMAGE", v.Pool+"/"+v.Name)
	kv("IMAGE_ID", v.ID)
	kv("SIZE", v.Size)
}

func cmdRook(ctx context.Context, s *sim.Sim, env sim.Env, args []string) error {
	fs := flag.NewFlagSet("rook", flag.ExitOnError)
	if _, err := parse(fs, args, 0); err != nil {
		return err
	}
	mons := env.Monitors()
	if len(mons) == 0 {
		return errors.New("env has neither CEPH_MON_HOST_V1 nor CEPH_MON_HOST_V2")
	}
	user := env.Get("CEPH_CSI_USER")
	if user == "" {
		user = sim.DefaultCSIUserID
	}
	key := env.Get("CEPH_CSI_KEY")
	if key == "" {
		var err error
		if key, err = s.AuthGetKey(ctx, user); err != nil {
			return err
		}
	}
	if err := s.InstallRook(ctx, mons, user, key); err != nil {
		return err
	}
	o := s.Options()
	kv("CONFIGMAP", o.RookNamespace+"/"+sim.RookConfigMap)
	kv("SECRET", o.RookNamespace+"/"+sim.RookSecret)
	kv("CLUSTER_ID", o.ClusterID)
	kv("MONITORS", strings.Join(mons, ","))
	kv("USER_ID", user)
	return nil
}

func cmdVolume(ctx context.Context, s *sim.Sim, args []string) error {
	fs := flag.NewFlagSet("volume", flag.ExitOnError)
	fill := fs.String("fill", "", "fill spec KIND:LEN[@OFF],...")
	seed := fs.Int64("seed", 1, "data seed")
	pos, err := parse(fs, args, 2)
	if err != nil {
		return err
	}
	ns, name, err := splitNS(pos[0])
	if err != nil {
		return err
	}
	size, err := sim.ParseSize(pos[1])
	if err != nil {
		return err
	}
	regions, err := sim.ParseRegions(*fill)
	if err != nil {
		return err
	}
	v, err := s.CreateVolume(ctx, ns, name, size)
	if err != nil {
		return err
	}
	start := time.Now()
	if err := v.Fill(ctx, regions, *seed); err != nil {
		return err
	}
	printVolume(v)
	if len(regions) > 0 {
		kv("FILL", *fill)
		kv("FILL_SECONDS", fmt.Sprintf("%.2f", time.Since(start).Seconds()))
	}
	return nil
}

func cmdSnapshot(ctx context.Context, s *sim.Sim, args []string) error {
	fs := flag.NewFlagSet("snapshot", flag.ExitOnError)
	backup := fs.String("backup", "", "Velero backup name (label velero.io/backup-name)")
	sum := fs.Bool("sha256", false, "also print the snapshot's SHA-256")
	pos, err := parse(fs, args, 1)
	if err != nil {
		return err
	}
	ns, name, err := splitNS(pos[0])
	if err != nil {
		return err
	}
	v, err := s.LookupVolume(ctx, ns, name)
	if err != nil {
		return err
	}
	snap, err := s.CreateSnapshot(ctx, v, *backup)
	if err != nil {
		return err
	}
	kv("VSC", snap.ContentName)
	kv("VS", snap.VSNamespace+"/"+snap.VSName)
	kv("SNAPSHOT_HANDLE", snap.Handle)
	kv("IMAGE", v.Pool+"/"+snap.ImageName+"@"+snap.SnapName)
	kv("IMAGE_ID", snap.ImageID)
	kv("SOURCE_IMAGE", v.Pool+"/"+v.Name)
	kv("SIZE", snap.Size)
	if *sum {
		h, err := s.ReadSnapshotSHA256(ctx, snap)
		if err != nil {
			return err
		}
		kv("SHA256", h)
	}
	return nil
}

func cmdWrite(ctx context.Context, s *sim.Sim, args []string) error {
	fs := flag.NewFlagSet("write", flag.ExitOnError)
	offStr := fs.String("offset", "0", "offset (size suffixes allowed)")
	lenStr := fs.String("length", "", "length (size suffixes allowed)")
	seed := fs.Int64("seed", time.Now().UnixNano(), "data seed (default: time)")
	kindStr := fs.String("kind", "random", "random, text, zero, discard or hole")
	pos, err := parse(fs, args, 1)
	if err != nil {
		return err
	}
	ns, name, err := splitNS(pos[0])
	if err != nil {
		return err
	}
	off, err := sim.ParseSize(*offStr)
	if err != nil {
		return err
	}
	n, err := sim.ParseSize(*lenStr)
	if err != nil {
		return fmt.Errorf("--length: %w", err)
	}
	kind, err := sim.ParseKind(*kindStr)
	if err != nil {
		return err
	}
	v, err := s.LookupVolume(ctx, ns, name)
	if err != nil {
		return err
	}
	if err := v.Fill(ctx, []sim.Region{{Off: off, Len: n, Kind: kind}}, *seed); err != nil {
		return err
	}
	kv("PVC", ns+"/"+name)
	kv("WROTE", fmt.Sprintf("%s:%d@%d", kind, n, off))
	kv("SEED", *seed)
	return nil
}

func cmdRestore(ctx context.Context, s *sim.Sim, args []string) error {
	fs := flag.NewFlagSet("restore", flag.ExitOnError)
	pos, err := parse(fs, args, 2)
	if err != nil {
		return err
	}
	vsNS, vsName, err := splitNS(pos[0])
	if err != nil {
		return err
	}
	ns, name, err := splitNS(pos[1])
	if err != nil {
		return err
	}
	snap, err := s.LookupSnapshot(ctx, vsNS, vsName)
	if err != nil {
		return err
	}
	v, err := s.CreateVolumeFromSnapshot(ctx, snap, ns, name)
	if err != nil {
		return err
	}
	printVolume(v)
	return nil
}

func cmdSHA256(ctx context.Context, s *sim.Sim, args []string) error {
	fs := flag.NewFlagSet("sha256", flag.ExitOnError)
	snapArg := fs.String("snapshot", "", "NS/VOLUMESNAPSHOT instead of a PVC")
	want := 1
	for _, a := range args {
		if strings.HasPrefix(a, "-snapshot") || strings.HasPrefix(a, "--snapshot") {
			want = 0
		}
	}
	pos, err := parse(fs, args, want)
	if err != nil {
		return err
	}
	var h string
	if *snapArg != "" {
		ns, name, err := splitNS(*snapArg)
		if err != nil {
			return err
		}
		snap, err := s.LookupSnapshot(ctx, ns, name)
		if err != nil {
			return err
		}
		if h, err = s.ReadSnapshotSHA256(ctx, snap); err != nil {
			return err
		}
	} else {
		ns, name, err := splitNS(pos[0])
		if err != nil {
			return err
		}
		v, err := s.LookupVolume(ctx, ns, name)
		if err != nil {
			return err
		}
		if h, err = v.SHA256(ctx); err != nil {
			return err
		}
	}
	kv("SHA256", h)
	return nil
}

func cmdDelete(ctx context.Context, s *sim.Sim, args []string) error {
	fs := flag.NewFlagSet("delete", flag.ExitOnError)
	pos, err := parse(fs, args, 1)
	if err != nil {
		return err
	}
	ns, name, err := splitNS(pos[0])
	if err != nil {
		return err
	}
	v, err := s.LookupVolume(ctx, ns, name)
	if err != nil {
		return err
	}
	trashed, err := s.DeleteVolume(ctx, v)
	if err != nil {
		return err
	}
	kv("DELETED", ns+"/"+name)
	kv("TRASHED", trashed)
	return nil
}

func cmdCleanup(ctx context.Context, s *sim.Sim, args []string) error {
	fs := flag.NewFlagSet("cleanup", flag.ExitOnError)
	pos, err := parse(fs, args, 1)
	if err != nil {
		return err
	}
	if err := s.CleanupNamespace(ctx, pos[0]); err != nil {
		return err
	}
	kv("CLEANED", pos[0])
	return nil
}
