package objectstore

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"syscall"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
	"github.com/minio/minio-go/v7/pkg/s3utils"
)

// S3Config locates a repository in an S3 bucket.
type S3Config struct {
	Endpoint   string // "https://host[:port]" or "http://host[:port]"
	Bucket     string
	Prefix     string // optional folder inside the bucket, e.g. "prod/lifeboat"
	Region     string // optional; asked from the server when empty
	CACertFile string // optional PEM bundle trusted in addition to the system's
	// PathStyle forces path-style requests (http://host/bucket/key), which
	// most non-AWS servers need. When false minio-go decides: virtual-host
	// style for AWS and a few known clouds, path style elsewhere.
	PathStyle    bool
	AccessKey    string
	SecretKey    string
	SessionToken string // temporary credentials (STS), optional
	CreateBucket bool   // create the bucket if it is missing
	// CreateWithObjectLock creates it with S3 Object Lock enabled.
	CreateWithObjectLock bool
	Timeout              time.Duration // bound on the connection check; default 10s
}

// String shows the config without the secret key, so that logging it by
// mistake does not leak it.
func (c S3Config) String() string {
	type plain S3Config // drops the methods: no recursion
	p := plain(c)
	if p.SecretKey != "" {
		p.SecretKey = "REDACTED"
	}
	if p.SessionToken != "" {
		p.SessionToken = "REDACTED"
	}
	return fmt.Sprintf("%+v", p)
}

func (c S3Config) GoString() string { return c.String() }

// S3 is a Backend on an S3 bucket.
type S3 struct {
	client   *minio.Client
	bucket   string
	prefix   string // "" or ends in "/"
	endpoint string
}

// NewS3 connects to the bucket and checks that it is usable, so that a
// wrong endpoint, credentials or bucket name shows up here with a clear
// message rather than halfway through a backup.
func NewS3(ctx context.Context, cfg S3Config) (*S3, error) {
	u, err := url.Parse(cfg.Endpoint)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || strings.Trim(u.Path, "/") != "" {
		return nil, fmt.Errorf("S3 endpoint %q: want http://host[:port] or https://host[:port], without a path", cfg.Endpoint)
	}
	if err := s3utils.CheckValidBucketName(cfg.Bucket); err != nil {
		return nil, fmt.Errorf("S3 bucket name %q: %v", cfg.Bucket, err)
	}
	tr, err := transport(u.Scheme == "https", cfg.CACertFile)
	if err != nil {
		return nil, err
	}
	lookup := minio.BucketLookupAuto
	if cfg.PathStyle {
		lookup = minio.BucketLookupPath
	}
	client, err := minio.New(u.Host, &minio.Options{
		Creds:        credentials.NewStaticV4(cfg.AccessKey, cfg.SecretKey, cfg.SessionToken),
		Secure:       u.Scheme == "https",
		Transport:    tr,
		Region:       cfg.Region,
		BucketLookup: lookup,
		// Repository calls retry with backoff themselves; one extra try
		// here lets minio-go follow a region redirect.
		MaxRetries: 2,
	})
	if err != nil {
		return nil, fmt.Errorf("S3 endpoint %s: %v", cfg.Endpoint, err)
	}
	prefix := strings.Trim(cfg.Prefix, "/")
	if prefix != "" {
		prefix += "/"
	}
	s := &S3{client: client, bucket: cfg.Bucket, prefix: prefix, endpoint: u.Scheme + "://" + u.Host}
	timeout := cfg.Timeout
	if timeout <= 0 {
		timeout = 10 * time.Second
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	if err := s.ensureBucket(ctx, cfg); err != nil {
		if errors.Is(err, context.DeadlineExceeded) {
			err = fmt.Errorf("%w (no answer within %v)", err, timeout)
		}
		return nil, err
	}
	return s, nil
}

func transport(secure bool, caFile string) (*http.Transport, error) {
	tr, err := minio.DefaultTransport(secure)
	if err != nil {
		return nil, err
	}
	// Fail fast on a dead endpoint instead of minio-go's 30 s.
	tr.DialContext = (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext
	if caFile == "" {
		return tr, nil
	}
	if !secure {
		return nil, fmt.Errorf("a CA certificate file (%s) was given for a plain http endpoint: use https", caFile)
	}
	pem, err := os.ReadFile(caFile)
	if err != nil {
		return nil, fmt.Errorf("reading S3 CA certificates: %w", err)
	}
	pool, err := x509.SystemCertPool()
	if err != nil {
		pool = x509.NewCertPool()
	}
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("no PEM certificates in %s", caFile)
	}
	tr.TLSClientConfig = &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: pool}
	return tr, nil
}

func (s *S3) ensureBucket(ctx context.Context, cfg S3Config) error {
	ok, err := s.client.BucketExists(ctx, s.bucket)
	if err != nil {
		return s.wrap("checking bucket", "", err)
	}
	if ok {
		return nil
	}
	if !cfg.CreateBucket {
		return fmt.Errorf("%w: %q at %s: create it, or let lifeboat create it (--s3-create-bucket, s3.createBucket)",
			ErrNoBucket, s.bucket, s.endpoint)
	}
	err = s.client.MakeBucket(ctx, s.bucket, minio.MakeBucketOptions{Region: cfg.Region, ObjectLocking: cfg.CreateWithObjectLock})
	switch resp := minio.ToErrorResponse(err); {
	case resp.Code == "BucketAlreadyOwnedByYou":
		return nil // created concurrently: fine
	case resp.Code == "AccessDenied":
		// The credentials work (BucketExists answered); creating is what
		// this user may not do.
		return fmt.Errorf("%w: %q at %s, and this user may not create it (AccessDenied): create the bucket yourself or grant s3:CreateBucket",
			ErrNoBucket, s.bucket, s.endpoint)
	}
	return s.wrap("creating bucket", "", err)
}

// wrap turns minio-go errors into the package's sentinels with a message
// that names the bucket and endpoint (never the credentials).
func (s *S3) wrap(op, name string, err error) error {
	if err == nil {
		return nil
	}
	where := s.String() + name
	resp := minio.ToErrorResponse(err)
	switch {
	case resp.Code == "NoSuchKey":
		return fmt.Errorf("%s %s: %w", op, where, ErrNotFound)
	case resp.Code == "NoSuchBucket":
		return fmt.Errorf("%s %s: %w: %q at %s", op, where, ErrNoBucket, s.bucket, s.endpoint)
	case resp.StatusCode == 403 || resp.Code == "AccessDenied" ||
		resp.Code == "InvalidAccessKeyId" || resp.Code == "SignatureDoesNotMatch":
		return fmt.Errorf("%s %s: %w for bucket %q at endpoint %s (%s): check AWS_ACCESS_KEY_ID and "+
			"AWS_SECRET_ACCESS_KEY, and that this user may read and write the bucket",
			op, where, ErrCredentials, s.bucket, s.endpoint, resp.Code)
	case resp.StatusCode >= 500 || resp.StatusCode == 429 || resp.Code == "SlowDown" || resp.Code == "SlowDownWrite" ||
		resp.Code == "SlowDownRead" || resp.Code == "ServiceUnavailable" || resp.Code == "XMinioServerNotInitialized":
		return fmt.Errorf("%s %s: %w (%s %d): %w", op, where, ErrUnavailable, resp.Code, resp.StatusCode, err)
	case resp.Code == "" && unreachable(err):
		return fmt.Errorf("%s %s: %w: %w (check the endpoint address and the network path to it)",
			op, where, ErrUnreachable, err)
	}
	return fmt.Errorf("%s %s: %w", op, where, err)
}

// unreachable tells transport failures (refused, no route, DNS, timeouts)
// from S3 answering with an error.
// A body cut short (the server went away mid-answer) counts as a
// transport failure too.
func unreachable(err error) bool {
	var ne net.Error
	var ue *url.Error
	return errors.As(err, &ne) || errors.As(err, &ue) || errors.Is(err, context.DeadlineExceeded) ||
		errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.ECONNREFUSED) ||
		errors.Is(err, syscall.EPIPE)
}

func (s *S3) Put(ctx context.Context, name string, data []byte) error {
	return s.wrap("writing", name, s.put(ctx, name, data, putOptions()))
}

// Create is a conditional PUT (If-None-Match: *), which MinIO and AWS S3
// (since 2024) honour. On a server that ignores the header, or refuses it
// as not implemented, it is a plain Put: Init's emptiness check then
// still guards all but a race.
func (s *S3) Create(ctx context.Context, name string, data []byte) error {
	opts := putOptions()
	opts.SetMatchETagExcept("*")
	err := s.put(ctx, name, data, opts)
	switch resp := minio.ToErrorResponse(err); {
	case resp.StatusCode == 412 || resp.Code == "PreconditionFailed":
		return fmt.Errorf("writing %s%s: %w", s.String(), name, ErrExists)
	case resp.StatusCode == 501 || resp.Code == "NotImplemented":
		return s.Put(ctx, name, data) // a server that refuses the header
	}
	return s.wrap("writing", name, err)
}

func (s *S3) put(ctx context.Context, name string, data []byte, opts minio.PutObjectOptions) error {
	_, err := s.client.PutObject(ctx, s.bucket, s.prefix+name, bytes.NewReader(data), int64(len(data)), opts)
	return err
}

// putOptions are those of every PUT: one request, known length. Every
// chunk is verified end to end by its id, so minio-go's SHA-256 of the
// payload for request signing over plain HTTP is a wasted pass (HTTPS
// sends UNSIGNED-PAYLOAD anyway).
func putOptions() minio.PutObjectOptions {
	return minio.PutObjectOptions{ContentType: "application/octet-stream", DisableMultipart: true, DisableContentSha256: true}
}

func (s *S3) Get(ctx context.Context, name string) ([]byte, error) {
	return s.GetInto(ctx, name, nil, -1)
}

func (s *S3) GetInto(ctx context.Context, name string, buf []byte, limit int64) ([]byte, error) {
	// minio.Core's GetObject is one GET that returns the size with the body.
	// The Client's lazy object would first send a HEAD for Stat: a second
	// request per chunk, a third of MinIO's CPU in a restore.
	body, info, _, err := minio.Core{Client: s.client}.GetObject(ctx, s.bucket, s.prefix+name, minio.GetObjectOptions{})
	if err != nil {
		return nil, s.wrap("reading", name, err)
	}
	defer body.Close()
	if info.Size < 0 {
		return nil, s.wrap("reading", name, errors.New("the response has no Content-Length"))
	}
	if limit >= 0 && info.Size > limit {
		return nil, tooLarge(s.String()+name, info.Size, limit)
	}
	data := buf[:0]
	if int64(cap(data)) < info.Size {
		data = make([]byte, info.Size)
	}
	data = data[:info.Size]
	if _, err := io.ReadFull(body, data); err != nil {
		return nil, s.wrap("reading", name, err)
	}
	return data, nil
}

func (s *S3) Stat(ctx context.Context, name string) (int64, error) {
	info, err := s.client.StatObject(ctx, s.bucket, s.prefix+name, minio.StatObjectOptions{})
	return info.Size, s.wrap("checking", name, err)
}

func (s *S3) List(ctx context.Context, prefix string, fn func(string, int64) error) error {
	ctx, cancel := context.WithCancel(ctx) // stops minio-go's lister if fn bails out
	defer cancel()
	for obj := range s.client.ListObjects(ctx, s.bucket, minio.ListObjectsOptions{Prefix: s.prefix + prefix, Recursive: true}) {
		if obj.Err != nil {
			return s.wrap("listing", prefix, obj.Err)
		}
		if err := fn(strings.TrimPrefix(obj.Key, s.prefix), obj.Size); err != nil {
			return err
		}
	}
	return ctx.Err()
}

func (s *S3) Delete(ctx context.Context, name string) error {
	return s.wrap("deleting", name, s.client.RemoveObject(ctx, s.bucket, s.prefix+name, minio.RemoveObjectOptions{}))
}

// String is the repository's location as endpoint/bucket/prefix.
func (s *S3) String() string { return s.endpoint + "/" + s.bucket + "/" + s.prefix }

// ObjectLockEnabled asks the bucket's object-lock configuration.
func (s *S3) ObjectLockEnabled(ctx context.Context) (bool, error) {
	enabled, _, _, _, err := s.client.GetObjectLockConfig(ctx, s.bucket)
	if resp := minio.ToErrorResponse(err); resp.Code == "ObjectLockConfigurationNotFoundError" {
		return false, nil
	}
	return enabled == "Enabled", s.wrap("checking Object Lock of", "", err)
}

// PutRetained is Put with the object locked until until. S3 wants a
// Content-MD5 (or a checksum) on a PUT that sets a lock.
func (s *S3) PutRetained(ctx context.Context, name string, data []byte, mode string, until time.Time) error {
	opts := putOptions()
	opts.Mode, opts.RetainUntilDate, opts.SendContentMd5 = retentionMode(mode), until, true
	return s.wrap("writing", name, s.put(ctx, name, data, opts))
}

func retentionMode(mode string) minio.RetentionMode {
	return minio.RetentionMode(strings.ToUpper(mode))
}

// RetainedUntil reads the retain-until date from a HEAD of the object.
func (s *S3) RetainedUntil(ctx context.Context, name string) (time.Time, error) {
	info, err := s.client.StatObject(ctx, s.bucket, s.prefix+name, minio.StatObjectOptions{})
	if err != nil {
		return time.Time{}, s.wrap("checking", name, err)
	}
	v := info.Metadata.Get("X-Amz-Object-Lock-Retain-Until-Date")
	if v == "" {
		return time.Time{}, nil
	}
	until, err := time.Parse(time.RFC3339, v)
	if err != nil {
		return time.Time{}, fmt.Errorf("checking %s%s: retain-until date %q: %v", s, name, v, err)
	}
	return until, nil
}

// Retain sets the retain-until date of the object's current version.
func (s *S3) Retain(ctx context.Context, name, mode string, until time.Time) error {
	m := retentionMode(mode)
	err := s.client.PutObjectRetention(ctx, s.bucket, s.prefix+name, minio.PutObjectRetentionOptions{Mode: &m, RetainUntilDate: &until})
	return s.wrap("locking", name, err)
}

// DeleteVersions lists the object's versions (delete markers included)
// and deletes each by id. It costs a LIST more than Delete.
func (s *S3) DeleteVersions(ctx context.Context, name string) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	key := s.prefix + name
	for obj := range s.client.ListObjects(ctx, s.bucket, minio.ListObjectsOptions{Prefix: key, WithVersions: true}) {
		if obj.Err != nil {
			return s.wrap("listing versions of", name, obj.Err)
		}
		if obj.Key != key {
			continue
		}
		err := s.client.RemoveObject(ctx, s.bucket, key, minio.RemoveObjectOptions{VersionID: obj.VersionID})
		if resp := minio.ToErrorResponse(err); resp.Code == "ObjectLocked" || worm(resp.Message) {
			until, _ := s.RetainedUntil(ctx, name)
			return &RetainedError{Name: s.String() + name, Until: until}
		}
		if err != nil {
			return s.wrap("deleting", name, err)
		}
	}
	return ctx.Err()
}

// worm tells S3's refusal to delete a locked version (MinIO: ObjectLocked,
// "Object is WORM protected"; AWS: AccessDenied, "… object lock") from
// a refusal of permission.
func worm(msg string) bool {
	msg = strings.ToLower(msg)
	return strings.Contains(msg, "worm") || strings.Contains(msg, "retention") || strings.Contains(msg, "object lock")
}
