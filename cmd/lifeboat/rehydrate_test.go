package main

import (
	"testing"

	"github.com/lifeboat-backup/lifeboat/kube/backup"
	"github.com/lifeboat-backup/lifeboat/objectstore"
)

func TestParseIDMap(t *testing.T) {
	m, err := parseIDMap([]string{"rook-ceph=site-b", "old=new=x"})
	if err != nil || m["rook-ceph"] != "site-b" || m["old"] != "new=x" {
		t.Errorf("%v, %v", m, err)
	}
	for _, bad := range []string{"rook-ceph", "=x", "x="} {
		if _, err := parseIDMap([]string{bad}); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

func TestDefaultCluster(t *testing.T) {
	s := func(velero, cluster string) objectstore.Summary {
		return objectstore.Summary{Source: map[string]string{backup.KeyVeleroBackup: velero, backup.KeyClusterID: cluster}}
	}
	all := []objectstore.Summary{s("a", "rook-ceph"), s("a", "rook-ceph"), s("b", "one"), s("b", "two")}
	if got := defaultCluster(all, "a", nil); got != "rook-ceph" {
		t.Errorf("got %q", got)
	}
	if got := defaultCluster(all, "a", map[string]string{"rook-ceph": "site-b"}); got != "site-b" {
		t.Errorf("mapped: got %q", got)
	}
	if got := defaultCluster(all, "b", nil); got != "" {
		t.Errorf("two clusters: got %q, want none (name one with --cluster)", got)
	}
}
