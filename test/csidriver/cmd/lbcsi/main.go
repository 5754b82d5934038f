// Command lbcsi is lifeboat's test CSI controller plugin: ceph-csi's RBD
// controller behaviour (see package csidriver) over a unix socket.
//
//	lbcsi --endpoint unix:///abs/csi.sock --config /abs/config.json \
//	      [--drivername rook-ceph.rbd.csi.ceph.com] [--instanceid default] [--v 5]
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"

	"github.com/lifeboat-backup/lifeboat/test/csidriver"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "lbcsi:", err)
		os.Exit(1)
	}
}

func run() error {
	fs := flag.NewFlagSet("lbcsi", flag.ContinueOnError)
	endpoint := fs.String("endpoint", "", "CSI endpoint, unix:///absolute/path.sock (required)")
	driver := fs.String("drivername", csidriver.DefaultDriverName, "CSI driver name")
	config := fs.String("config", "", "ceph-csi config.json (absolute path, required; read on every request)")
	instance := fs.String("instanceid", csidriver.DefaultInstanceID, "ceph-csi instance ID (suffix of the journal directory objects)")
	verbosity := fs.Int("v", 0, "log level: 5 or more logs debug messages")
	if err := fs.Parse(os.Args[1:]); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	if _, err := csidriver.SocketPath(*endpoint); err != nil {
		return fmt.Errorf("--endpoint: %w", err)
	}
	if *config == "" || !filepath.IsAbs(*config) {
		return fmt.Errorf("--config %q: want the absolute path of ceph-csi's config.json", *config)
	}
	if *driver == "" || *instance == "" {
		return fmt.Errorf("--drivername and --instanceid must not be empty")
	}
	level := slog.LevelInfo
	if *verbosity >= 5 {
		level = slog.LevelDebug
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	if _, err := os.Stat(*config); err != nil {
		log.Warn("config not readable yet; requests will fail until it is", "config", *config, "err", err)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	d := csidriver.New(csidriver.Options{DriverName: *driver, InstanceID: *instance, ConfigPath: *config, Logger: log})
	return d.Serve(ctx, *endpoint)
}
