// Package objectstore is lifeboat's backup repository: content-addressed,
// deduplicated, optionally encrypted image backups in an S3 bucket. It knows
// nothing of Ceph or Kubernetes; docs/format.md specifies what it stores.
//
// Writing a backup:
//
//	be, err := objectstore.NewS3(ctx, objectstore.S3Config{Endpoint: …, Bucket: …})
//	repo, err := objectstore.Open(ctx, be, key) // or Init once
//	parent, err := repo.FindLatest(ctx, func(s *objectstore.Summary) bool { return s.Source["image"] == img })
//	w, err := repo.NewBackup(ctx, objectstore.BackupOptions{Size: size, Parent: parent, Source: …})
//	defer w.Abort()
//	for each non-zero chunk, in offset order: err = w.Write(ctx, off, data)
//	m, err := w.Commit(ctx)
//
// Reading one back:
//
//	m, err := repo.LoadBackup(ctx, id)
//	err = repo.Stream(ctx, m, 8, func(off int64, data []byte) error { … write at off … })
//
// Every byte of an image passes through Write (holes may be skipped: gaps are
// zeros), because the manifest records the SHA-256 of the whole image and
// SHA-256 cannot be computed without the data. Unchanged chunks still cost no
// upload: their id is found among the parent's chunks.
package objectstore
