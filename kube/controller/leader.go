package controller

import (
	"context"
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/leaderelection"
	"k8s.io/client-go/tools/leaderelection/resourcelock"

	"github.com/lifeboat-backup/lifeboat/kube"
)

// Lease timings: a standby takes over within about LeaseDuration +
// RetryPeriod (~12 s) of the leader's death, at once after a clean exit
// (the lease is released).
const (
	leaseDuration = 10 * time.Second
	renewDeadline = 7 * time.Second
	retryPeriod   = 2 * time.Second
)

// RunLeading runs work only while this replica holds the Lease
// namespace/name, and returns when ctx ends or the lease is lost (the
// process should then exit and be restarted, like any client-go
// controller).
func RunLeading(ctx context.Context, k *kube.Clients, namespace, name, identity string, m *Metrics, work func(context.Context) error) error {
	lock := &resourcelock.LeaseLock{
		LeaseMeta:  metaFor(namespace, name),
		Client:     k.Kube.CoordinationV1(),
		LockConfig: resourcelock.ResourceLockConfig{Identity: identity},
	}
	var workErr error
	lost := false
	done := make(chan struct{}) // closed when work has returned
	var started atomic.Bool
	le, err := leaderelection.NewLeaderElector(leaderelection.LeaderElectionConfig{
		Lock: lock, ReleaseOnCancel: true, Name: name,
		LeaseDuration: leaseDuration, RenewDeadline: renewDeadline, RetryPeriod: retryPeriod,
		Callbacks: leaderelection.LeaderCallbacks{
			OnStartedLeading: func(ctx context.Context) {
				slog.Info("leading", "lease", namespace+"/"+name, "identity", identity)
				started.Store(true)
				m.Leader.Set(1)
				defer close(done)
				workErr = work(ctx)
			},
			OnStoppedLeading: func() {
				m.Leader.Set(0)
				lost = ctx.Err() == nil
				slog.Info("stopped leading", "lease", namespace+"/"+name, "identity", identity)
			},
			OnNewLeader: func(id string) {
				if id != identity {
					slog.Info("standing by", "leader", id)
				}
			},
		},
	})
	if err != nil {
		return fmt.Errorf("leader election: %w", err)
	}
	m.Leader.Set(0)
	le.Run(ctx)
	if started.Load() {
		<-done // the work's context is cancelled: let an export abort cleanly
	}
	if workErr != nil {
		return workErr
	}
	if lost {
		return fmt.Errorf("lost the leader lease %s/%s", namespace, name)
	}
	return nil
}

func metaFor(namespace, name string) metav1.ObjectMeta {
	return metav1.ObjectMeta{Namespace: namespace, Name: name}
}
