package controller

import (
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"k8s.io/client-go/util/workqueue"

	"github.com/lifeboat-backup/lifeboat/kube/backup"
	"github.com/lifeboat-backup/lifeboat/rbd"
)

// Metrics are lifeboat's Prometheus metrics, on their own registry.
type Metrics struct {
	Registry *prometheus.Registry

	Snapshots      *prometheus.GaugeVec
	OrphanImages   prometheus.Gauge
	OrphanBytes    prometheus.Gauge
	Exports        *prometheus.CounterVec
	ExportBytes    *prometheus.CounterVec
	ExportDuration prometheus.Histogram
	ExportPaths    *prometheus.CounterVec
	Fallbacks      *prometheus.CounterVec
	Retention      *prometheus.CounterVec
	CaughtUp       prometheus.Counter
	LastExport     *prometheus.GaugeVec
	VerifyProblems *prometheus.GaugeVec
	CephUp         *prometheus.GaugeVec
	ObjectstoreUp  prometheus.Gauge
	Damaged        prometheus.Gauge
	Leader         prometheus.Gauge
}

// NewMetrics registers every metric, the Go and process collectors, and
// client-go's workqueue metrics.
func NewMetrics() *Metrics {
	m := &Metrics{Registry: prometheus.NewRegistry()}
	f := func(c prometheus.Collector) { m.Registry.MustRegister(c) }
	m.Snapshots = prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "lifeboat_snapshots",
		Help: "RBD CSI snapshots by verification status (OK or Problem) at the last verification."}, []string{"status"})
	m.OrphanImages = prometheus.NewGauge(prometheus.GaugeOpts{Name: "lifeboat_orphan_images",
		Help: "CSI snapshot images no VolumeSnapshotContent points to."})
	m.OrphanBytes = prometheus.NewGauge(prometheus.GaugeOpts{Name: "lifeboat_orphan_bytes",
		Help: "Provisioned size in bytes of the orphaned CSI snapshot images."})
	m.Exports = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "lifeboat_exports_total",
		Help: "Snapshot exports attempted, by result (success or failure)."}, []string{"result"})
	m.ExportBytes = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "lifeboat_export_bytes_total",
		Help: "Bytes of exports: read from Ceph, new to the repository, and stored after compression."}, []string{"kind"})
	m.ExportDuration = prometheus.NewHistogram(prometheus.HistogramOpts{Name: "lifeboat_export_duration_seconds",
		Help: "Duration of successful exports.", Buckets: prometheus.ExponentialBuckets(1, 2, 14)})
	m.ExportPaths = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "lifeboat_export_paths_total",
		Help: "Successful exports by how they found the data: full, hash (read all, upload changes), diff-by-id or diff-by-name (read only what Ceph says changed)."}, []string{"path"})
	m.Fallbacks = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "lifeboat_export_diff_fallbacks_total",
		Help: "Incremental exports that could not use Ceph's diff and read every allocated chunk instead, by reason."}, []string{"reason"})
	m.Retention = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "lifeboat_retention_forgets_total",
		Help: "Backups the retention policy forgot (forgotten), and attempts that failed (failure)."}, []string{"result"})
	m.CaughtUp = prometheus.NewCounter(prometheus.CounterOpts{Name: "lifeboat_velero_caught_up_total",
		Help: "Snapshots of completed Velero backups the agent never saw as VolumeSnapshotContents (taken while no agent led), queued for export from Velero's volume list."})
	m.LastExport = prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "lifeboat_last_export_timestamp_seconds",
		Help: "Unix time of the last successful export of each PVC."}, []string{"namespace", "pvc"})
	m.VerifyProblems = prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "lifeboat_verify_problems",
		Help: "Problems found at the last verification, by code."}, []string{"code"})
	m.CephUp = prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "lifeboat_ceph_up",
		Help: "1 when the Ceph cluster answered the last operation, 0 when it did not."}, []string{"cluster"})
	m.ObjectstoreUp = prometheus.NewGauge(prometheus.GaugeOpts{Name: "lifeboat_objectstore_up",
		Help: "1 when the S3 repository answered the last operation, 0 when it did not."})
	m.Damaged = prometheus.NewGauge(prometheus.GaugeOpts{Name: "lifeboat_repository_damaged_objects",
		Help: "Backups whose manifest or extents page was damaged or missing when the agent read the repository at start; they are skipped."})
	m.Leader = prometheus.NewGauge(prometheus.GaugeOpts{Name: "lifeboat_leader",
		Help: "1 when this replica holds the leader lease and works, 0 on standby."})
	for _, c := range []prometheus.Collector{m.Snapshots, m.OrphanImages, m.OrphanBytes, m.Exports, m.ExportBytes,
		m.ExportDuration, m.ExportPaths, m.Fallbacks, m.Retention, m.CaughtUp, m.LastExport, m.VerifyProblems, m.CephUp, m.ObjectstoreUp, m.Damaged, m.Leader,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{})} {
		f(c)
	}
	// Show every label value from the start: a zero is information.
	for _, r := range []string{"success", "failure"} {
		m.Exports.WithLabelValues(r)
	}
	for _, r := range []string{"forgotten", "failure"} {
		m.Retention.WithLabelValues(r)
	}
	for _, k := range []string{"read", "new", "stored"} {
		m.ExportBytes.WithLabelValues(k)
	}
	for _, p := range backup.Paths {
		m.ExportPaths.WithLabelValues(p)
	}
	for _, r := range backup.Fallbacks {
		m.Fallbacks.WithLabelValues(r)
	}
	for _, c := range rbd.Codes {
		m.VerifyProblems.WithLabelValues(string(c))
	}
	for _, s := range []string{"OK", "Problem"} {
		m.Snapshots.WithLabelValues(s)
	}
	workqueue.SetProvider(&queueMetrics{reg: m.Registry})
	return m
}

// queueMetrics exposes client-go's workqueue metrics (workqueue_depth,
// workqueue_adds_total, ...) with the names kube-controller-manager uses.
type queueMetrics struct{ reg *prometheus.Registry }

// register ignores a second registration: one queue, one set of metrics.
func (q *queueMetrics) register(c prometheus.Collector) { _ = q.reg.Register(c) }

func (q *queueMetrics) gauge(name, help, queue string) prometheus.Gauge {
	g := prometheus.NewGauge(prometheus.GaugeOpts{Subsystem: "workqueue", Name: name, Help: help, ConstLabels: prometheus.Labels{"name": queue}})
	q.register(g)
	return g
}

func (q *queueMetrics) counter(name, help, queue string) prometheus.Counter {
	c := prometheus.NewCounter(prometheus.CounterOpts{Subsystem: "workqueue", Name: name, Help: help, ConstLabels: prometheus.Labels{"name": queue}})
	q.register(c)
	return c
}

func (q *queueMetrics) histogram(name, help, queue string) prometheus.Histogram {
	h := prometheus.NewHistogram(prometheus.HistogramOpts{Subsystem: "workqueue", Name: name, Help: help,
		ConstLabels: prometheus.Labels{"name": queue}, Buckets: prometheus.ExponentialBuckets(1e-6, 10, 10)})
	q.register(h)
	return h
}

func (q *queueMetrics) NewDepthMetric(n string) workqueue.GaugeMetric {
	return q.gauge("depth", "Current depth of the workqueue.", n)
}
func (q *queueMetrics) NewAddsMetric(n string) workqueue.CounterMetric {
	return q.counter("adds_total", "Total adds handled by the workqueue.", n)
}
func (q *queueMetrics) NewLatencyMetric(n string) workqueue.HistogramMetric {
	return q.histogram("queue_duration_seconds", "How long in seconds an item stays in the workqueue before being requested.", n)
}
func (q *queueMetrics) NewWorkDurationMetric(n string) workqueue.HistogramMetric {
	return q.histogram("work_duration_seconds", "How long in seconds processing an item from the workqueue takes.", n)
}
func (q *queueMetrics) NewUnfinishedWorkSecondsMetric(n string) workqueue.SettableGaugeMetric {
	return q.gauge("unfinished_work_seconds", "Seconds of work in progress not yet observed by work_duration.", n)
}
func (q *queueMetrics) NewLongestRunningProcessorSecondsMetric(n string) workqueue.SettableGaugeMetric {
	return q.gauge("longest_running_processor_seconds", "Seconds the longest running processor has been running.", n)
}
func (q *queueMetrics) NewRetriesMetric(n string) workqueue.CounterMetric {
	return q.counter("retries_total", "Total retries handled by the workqueue.", n)
}

// RecordExport counts a successful export of the snapshot of PVC pvc
// (namespace/name, "" when unknown).
func (m *Metrics) RecordExport(res *backup.Result, pvc string) {
	m.Exports.WithLabelValues("success").Inc()
	m.ExportDuration.Observe(res.Seconds)
	m.ExportPaths.WithLabelValues(res.Path).Inc()
	if res.Fallback != "" {
		m.Fallbacks.WithLabelValues(res.Fallback).Inc()
	}
	st := res.Manifest.Stats
	m.ExportBytes.WithLabelValues("read").Add(float64(res.CephBytesRead))
	m.ExportBytes.WithLabelValues("new").Add(float64(st.BytesNew))
	m.ExportBytes.WithLabelValues("stored").Add(float64(st.BytesStored))
	if ns, name, ok := strings.Cut(pvc, "/"); ok {
		m.LastExport.WithLabelValues(ns, name).Set(float64(time.Now().Unix()))
	}
}
