package controller

import (
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/lifeboat-backup/lifeboat/rbd"
)

// TestMetricsLint holds every metric to Prometheus' naming, unit and help
// conventions, with the linter of the Prometheus client.
func TestMetricsLint(t *testing.T) {
	m := NewMetrics()
	m.LastExport.WithLabelValues("ns", "pvc").Set(1)
	m.CephUp.WithLabelValues("c").Set(1)
	m.ExportDuration.Observe(3)
	problems, err := testutil.GatherAndLint(m.Registry)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		if strings.HasPrefix(p.Metric, "lifeboat_") || strings.HasPrefix(p.Metric, "workqueue_") {
			t.Errorf("%s: %s", p.Metric, p.Text)
		}
	}
}

func TestMetricsNamesAndZeros(t *testing.T) {
	m := NewMetrics()
	want := []string{"lifeboat_snapshots", "lifeboat_orphan_images", "lifeboat_orphan_bytes", "lifeboat_exports_total",
		"lifeboat_export_bytes_total", "lifeboat_export_duration_seconds", "lifeboat_verify_problems",
		"lifeboat_objectstore_up", "lifeboat_repository_damaged_objects", "lifeboat_leader", "go_goroutines", "process_resident_memory_bytes"}
	mfs, err := m.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	have := map[string]int{}
	for _, f := range mfs {
		have[f.GetName()] = len(f.Metric)
	}
	for _, n := range want {
		if _, ok := have[n]; !ok {
			t.Errorf("metric %s not exported", n)
		}
	}
	if have["lifeboat_verify_problems"] != len(rbd.Codes) || have["lifeboat_exports_total"] != 2 || have["lifeboat_export_bytes_total"] != 3 {
		t.Errorf("label values not all shown from the start: %v", have)
	}
}
