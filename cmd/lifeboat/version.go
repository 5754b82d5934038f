package main

import (
	"fmt"
	"runtime"

	librbd "github.com/ceph/go-ceph/rbd"
	"github.com/spf13/cobra"
)

// version is set at build time: -ldflags "-X main.version=v0.1.0".
var version = "dev"

func newVersionCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print lifeboat's version and the librbd it runs with",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			maj, min, ext := librbd.Version()
			fmt.Fprintf(cmd.OutOrStdout(), "lifeboat %s (%s, %s/%s, librbd %d.%d.%d, built for Ceph %s)\n",
				version, runtime.Version(), runtime.GOOS, runtime.GOARCH, maj, min, ext, cephRelease)
			return nil
		},
	}
}
