// Command s3tool is the benchmark's small S3 helper: it measures what a backup
// tool stored in a bucket and creates or removes the benchmark's buckets.
//
//	s3tool usage BUCKET   prints "BYTES OBJECTS": the sum of object sizes and their count
//	s3tool mb BUCKET      creates BUCKET (no error if it exists)
//	s3tool rb BUCKET      deletes every object in BUCKET, then BUCKET (no error if missing)
//
// It reads S3_ENDPOINT (http[s]://host:port), AWS_ACCESS_KEY_ID,
// AWS_SECRET_ACCESS_KEY and AWS_REGION from the environment, like the stack env.
package main

import (
	"context"
	"fmt"
	"net/url"
	"os"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
)

func main() {
	if len(os.Args) != 3 {
		fmt.Fprintln(os.Stderr, "usage: s3tool usage|mb|rb BUCKET")
		os.Exit(2)
	}
	if err := run(os.Args[1], os.Args[2]); err != nil {
		fmt.Fprintf(os.Stderr, "s3tool %s %s: %v\n", os.Args[1], os.Args[2], err)
		os.Exit(1)
	}
}

func run(cmd, bucket string) error {
	u, err := url.Parse(os.Getenv("S3_ENDPOINT"))
	if err != nil || u.Host == "" {
		return fmt.Errorf("S3_ENDPOINT %q: want http[s]://host:port", os.Getenv("S3_ENDPOINT"))
	}
	client, err := minio.New(u.Host, &minio.Options{
		Creds:        credentials.NewStaticV4(os.Getenv("AWS_ACCESS_KEY_ID"), os.Getenv("AWS_SECRET_ACCESS_KEY"), ""),
		Secure:       u.Scheme == "https",
		Region:       os.Getenv("AWS_REGION"),
		BucketLookup: minio.BucketLookupPath,
	})
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	switch cmd {
	case "usage":
		var size, n int64
		for obj := range client.ListObjects(ctx, bucket, minio.ListObjectsOptions{Recursive: true}) {
			if obj.Err != nil {
				return obj.Err
			}
			size += obj.Size
			n++
		}
		fmt.Println(size, n)
	case "mb":
		ok, err := client.BucketExists(ctx, bucket)
		if err != nil || ok {
			return err
		}
		return client.MakeBucket(ctx, bucket, minio.MakeBucketOptions{Region: os.Getenv("AWS_REGION")})
	case "rb":
		ok, err := client.BucketExists(ctx, bucket)
		if err != nil || !ok {
			return err
		}
		objs := client.ListObjects(ctx, bucket, minio.ListObjectsOptions{Recursive: true, WithVersions: true})
		for rerr := range client.RemoveObjects(ctx, bucket, objs, minio.RemoveObjectsOptions{}) {
			if rerr.Err != nil {
				return fmt.Errorf("remove %s: %w", rerr.ObjectName, rerr.Err)
			}
		}
		return client.RemoveBucket(ctx, bucket)
	default:
		return fmt.Errorf("unknown command %q (usage, mb, rb)", cmd)
	}
	return nil
}
