// Package rbd is lifeboat's window on Ceph. It knows nothing of Kubernetes
// or S3; callers hand it monitors and credentials.
//
// It has three layers, each in files of its own:
//   - librbd: connections (conn.go, retry.go), inspecting (inspect.go),
//     reading and diffing snapshots (read.go, diff.go), writing images
//     (write.go), pools, namespaces and image-meta (admin.go) and the one
//     table of RBD features (features.go). Built on go-ceph; the few calls
//     go-ceph lacks are cgo shims in internal/crbd, the only cgo here.
//   - ceph-csi: what ceph-csi keeps in Ceph and promises of it: its
//     journal, handle resolution and rehydration's journal entries
//     (journal.go), the checks of a snapshot image and the scan for CSI
//     snapshot images (check.go).
//   - formats: the handle format (handle/) and `rbd export-diff`'s
//     (rbddiff/), pure Go.
package rbd
