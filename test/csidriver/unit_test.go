package csidriver

import (
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"
)

func TestRoundOffBytes(t *testing.T) {
	for _, c := range []struct{ in, want uint64 }{
		{0, 0}, {1, 1 << 20}, {1 << 20, 1 << 20}, {(1 << 20) + 1, 2 << 20},
		{(1 << 30) - 1, 1 << 30}, {1 << 30, 1 << 30}, {(1 << 30) + 1, 2 << 30},
	} {
		if got := RoundOffBytes(c.in); got != c.want {
			t.Errorf("RoundOffBytes(%d) = %d, want %d", c.in, got, c.want)
		}
	}
}

func TestParseFeatures(t *testing.T) {
	if f, err := ParseFeatures("layering,exclusive-lock,object-map,fast-diff,deep-flatten"); err != nil || f != 1|4|8|16|32 {
		t.Errorf("full list = %b, %v", f, err)
	}
	if f, err := ParseFeatures(""); err != nil || f != 0 {
		t.Errorf(`"" = %d, %v`, f, err)
	}
	for in, want := range map[string]string{
		"layering,striping":   "invalid feature striping",
		"layering,object-map": "feature object-map requires exclusive-lock to be set",
		"fast-diff":           "feature fast-diff requires object-map to be set",
	} {
		if _, err := ParseFeatures(in); err == nil || err.Error() != want {
			t.Errorf("ParseFeatures(%q) = %v, want %q", in, err, want)
		}
	}
}

// TestSetCluster: concurrent writers keep each other's entries; readers see
// whole files.
func TestSetCluster(t *testing.T) {
	path := filepath.Join(t.TempDir(), "config.json")
	var wg sync.WaitGroup
	for i := 0; i < 20; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := ClusterInfo{ClusterID: fmt.Sprintf("c%d", i), Monitors: []string{fmt.Sprintf("127.0.0.1:%d", 1000+i)}}
			c.RBD.RadosNamespace = "ns"
			if err := SetCluster(path, c); err != nil {
				t.Error(err)
			}
			if _, err := readConfigFile(path); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	for i := 0; i < 20; i++ {
		c, err := ReadConfig(path, fmt.Sprintf("c%d", i))
		if err != nil || c.Monitors[0] != fmt.Sprintf("127.0.0.1:%d", 1000+i) || c.RBD.RadosNamespace != "ns" {
			t.Errorf("entry c%d = %+v, %v", i, c, err)
		}
	}
	// Replace one entry.
	if err := SetCluster(path, ClusterInfo{ClusterID: "c3", Monitors: []string{"127.0.0.1:9"}}); err != nil {
		t.Fatal(err)
	}
	if c, err := ReadConfig(path, "c3"); err != nil || c.Monitors[0] != "127.0.0.1:9" {
		t.Errorf("replaced c3 = %+v, %v", c, err)
	}
	if _, err := ReadConfig(path, "nope"); err == nil {
		t.Error("unknown clusterID read")
	}
	if err := os.WriteFile(path, []byte("{"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := ReadConfig(path, "c1"); err == nil {
		t.Error("bad JSON read")
	}
}

func TestSocketPath(t *testing.T) {
	if p, err := SocketPath("unix:///run/csi.sock"); err != nil || p != "/run/csi.sock" {
		t.Errorf("SocketPath = %q, %v", p, err)
	}
	for _, e := range []string{"", "/run/csi.sock", "unix://run/csi.sock", "tcp://127.0.0.1:1"} {
		if _, err := SocketPath(e); err == nil {
			t.Errorf("SocketPath(%q) accepted", e)
		}
	}
}
