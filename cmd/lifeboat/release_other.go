//go:build !pacific

package main

// cephRelease names the Ceph release the build tags target; without a
// release tag go-ceph targets its newest supported release.
const cephRelease = "reef or later"
