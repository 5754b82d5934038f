package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"k8s.io/apimachinery/pkg/api/resource"
	"sigs.k8s.io/yaml"

	"github.com/lifeboat-backup/lifeboat/objectstore"
)

// fileConfig is the --config YAML file. Flags given on the command line
// win over it.
type fileConfig struct {
	S3 struct {
		Endpoint     string `json:"endpoint"`
		Bucket       string `json:"bucket"`
		Prefix       string `json:"prefix"`
		Region       string `json:"region"`
		CAFile       string `json:"caFile"`
		PathStyle    bool   `json:"pathStyle"`
		CreateBucket bool   `json:"createBucket"`
		RetryFor     string `json:"retryFor"`
	} `json:"s3"`
	EncryptionKeyFile string      `json:"encryptionKeyFile"`
	Parallel          int         `json:"parallel"`
	Agent             agentConfig `json:"agent"`
}

// agentConfig is the agent: section, read by `lifeboat run`.
type agentConfig struct {
	Workers           *int             `json:"workers"`
	Export            *bool            `json:"export"`
	Selector          *string          `json:"selector"`
	IncludeNamespaces []string         `json:"includeNamespaces"`
	ExcludeNamespaces []string         `json:"excludeNamespaces"`
	VerifyInterval    string           `json:"verifyInterval"`
	LeaseName         string           `json:"leaseName"`
	MetricsAddress    string           `json:"metricsAddress"`
	CSIConfigMap      string           `json:"csiConfigMap"`
	CephSecret        string           `json:"cephSecret"`
	Retention         *retentionConfig `json:"retention"`
	VeleroNamespace   *string          `json:"veleroNamespace"`
	VeleroLookback    string           `json:"veleroLookback"`
	VeleroInterval    string           `json:"veleroInterval"`
}

// retentionConfig is agent.retention: the policy applied to a volume's
// backups after each export (see backups forget --keep-*).
type retentionConfig struct {
	KeepLast    int    `json:"keepLast"`
	KeepHourly  int    `json:"keepHourly"`
	KeepDaily   int    `json:"keepDaily"`
	KeepWeekly  int    `json:"keepWeekly"`
	KeepMonthly int    `json:"keepMonthly"`
	KeepYearly  int    `json:"keepYearly"`
	KeepWithin  string `json:"keepWithin"`
}

// policy checks and converts the section.
func (c retentionConfig) policy() (*objectstore.Policy, error) {
	p := &objectstore.Policy{Last: c.KeepLast, Hourly: c.KeepHourly, Daily: c.KeepDaily, Weekly: c.KeepWeekly,
		Monthly: c.KeepMonthly, Yearly: c.KeepYearly}
	if c.KeepWithin != "" {
		d, err := time.ParseDuration(c.KeepWithin)
		if err != nil {
			return nil, fmt.Errorf("agent.retention.keepWithin %q: %v (e.g. 720h)", c.KeepWithin, err)
		}
		p.Within = d
	}
	if err := p.Validate(); err != nil {
		return nil, fmt.Errorf("agent.retention: %w", err)
	}
	return p, nil
}

// repoFlags are the flags of every command that uses the repository.
type repoFlags struct {
	config   string
	file     fileConfig // what --config said
	s3       objectstore.S3Config
	keyFile  string
	parallel int
	retryFor time.Duration
}

func addRepoFlags(cmd *cobra.Command, r *repoFlags) {
	f := cmd.Flags()
	f.StringVar(&r.config, "config", "", "YAML file with s3.{endpoint,bucket,prefix,region,caFile,pathStyle,createBucket,retryFor}, encryptionKeyFile, parallel")
	f.StringVar(&r.s3.Endpoint, "s3-endpoint", "", "S3 endpoint URL, e.g. https://s3.example.com:9000")
	f.StringVar(&r.s3.Bucket, "s3-bucket", "", "S3 bucket of the backup repository")
	f.StringVar(&r.s3.Prefix, "s3-prefix", "", "folder inside the bucket (several repositories can share a bucket)")
	f.StringVar(&r.s3.Region, "s3-region", "", "S3 region (default: asked from the server)")
	f.StringVar(&r.s3.CACertFile, "s3-ca-file", "", "PEM CA bundle to trust for a TLS endpoint, besides the system's")
	f.BoolVar(&r.s3.PathStyle, "s3-path-style", false, "use path-style requests (most non-AWS servers)")
	f.BoolVar(&r.s3.CreateBucket, "s3-create-bucket", false, "create the bucket if it is missing")
	f.StringVar(&r.keyFile, "encryption-key-file", "", "file holding the repository's encryption key (trailing newline ignored); losing it loses the backups")
	f.IntVar(&r.parallel, "parallel", 0, fmt.Sprintf("chunks read, uploaded or written at once (default %d)", objectstore.DefaultParallel))
	f.DurationVar(&r.retryFor, "s3-retry-for", objectstore.DefaultRetryFor,
		"how long to retry S3 requests while it is unreachable or answers 5xx or SlowDown, before giving up")
}

// resolve merges the --config file under the flags, and the credentials
// from the environment.
func (r *repoFlags) resolve(cmd *cobra.Command) error {
	if r.config != "" {
		raw, err := os.ReadFile(r.config)
		if err != nil {
			return fmt.Errorf("--config: %w", err)
		}
		var fc fileConfig
		if err := yaml.UnmarshalStrict(raw, &fc); err != nil {
			return fmt.Errorf("--config %s: %w", r.config, err)
		}
		r.file = fc
		set := func(flag string, dst *string, v string) {
			if !cmd.Flags().Changed(flag) && v != "" {
				*dst = v
			}
		}
		set("s3-endpoint", &r.s3.Endpoint, fc.S3.Endpoint)
		set("s3-bucket", &r.s3.Bucket, fc.S3.Bucket)
		set("s3-prefix", &r.s3.Prefix, fc.S3.Prefix)
		set("s3-region", &r.s3.Region, fc.S3.Region)
		set("s3-ca-file", &r.s3.CACertFile, fc.S3.CAFile)
		set("encryption-key-file", &r.keyFile, fc.EncryptionKeyFile)
		if !cmd.Flags().Changed("s3-path-style") {
			r.s3.PathStyle = fc.S3.PathStyle
		}
		if !cmd.Flags().Changed("s3-create-bucket") {
			r.s3.CreateBucket = fc.S3.CreateBucket
		}
		if !cmd.Flags().Changed("parallel") && fc.Parallel > 0 {
			r.parallel = fc.Parallel
		}
		if !cmd.Flags().Changed("s3-retry-for") && fc.S3.RetryFor != "" {
			d, err := time.ParseDuration(fc.S3.RetryFor)
			if err != nil {
				return fmt.Errorf("--config %s: s3.retryFor %q: %v (e.g. 5m)", r.config, fc.S3.RetryFor, err)
			}
			r.retryFor = d
		}
	}
	if r.s3.Endpoint == "" || r.s3.Bucket == "" {
		return fmt.Errorf("no backup repository: set --s3-endpoint and --s3-bucket (or s3.endpoint and s3.bucket in --config)")
	}
	r.s3.AccessKey, r.s3.SecretKey = os.Getenv("AWS_ACCESS_KEY_ID"), os.Getenv("AWS_SECRET_ACCESS_KEY")
	r.s3.SessionToken = os.Getenv("AWS_SESSION_TOKEN")
	if r.s3.AccessKey == "" || r.s3.SecretKey == "" {
		return fmt.Errorf("no S3 credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY")
	}
	if r.parallel < 0 {
		return fmt.Errorf("--parallel must be positive")
	}
	if r.retryFor <= 0 {
		return fmt.Errorf("--s3-retry-for (s3.retryFor) must be positive")
	}
	return nil
}

// key reads the encryption key file, if any.
func (r *repoFlags) key() ([]byte, error) {
	if r.keyFile == "" {
		return nil, nil
	}
	return readKey("--encryption-key-file", r.keyFile)
}

// readKey reads a key file; a trailing newline is not part of the key.
func readKey(flag, file string) ([]byte, error) {
	k, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", flag, err)
	}
	k = bytes.TrimRight(k, "\r\n")
	if len(k) == 0 {
		return nil, fmt.Errorf("%s %s is empty", flag, file)
	}
	return k, nil
}

func (r *repoFlags) backend(ctx context.Context, cmd *cobra.Command) (*objectstore.S3, error) {
	if cmd != nil {
		if err := r.resolve(cmd); err != nil {
			return nil, err
		}
	}
	return objectstore.NewS3(ctx, r.s3)
}

// open opens the repository.
func (r *repoFlags) open(ctx context.Context, cmd *cobra.Command) (*objectstore.Repository, error) {
	be, err := r.backend(ctx, cmd)
	if err != nil {
		return nil, err
	}
	key, err := r.key()
	if err != nil {
		return nil, err
	}
	repo, err := objectstore.Open(ctx, be, key)
	if err != nil {
		return nil, err
	}
	repo.SetRetryFor(r.retryFor)
	return repo, nil
}

func newRepoCmd(g *globals) *cobra.Command {
	repo := &cobra.Command{Use: "repo", Short: "Manage the backup repository on S3"}
	rf := &repoFlags{}
	var chunk, lock string
	initCmd := &cobra.Command{
		Use:   "init",
		Short: "Create a backup repository in an S3 bucket (and prefix)",
		Long: `init writes the repository's config object. The chunk size is fixed for the repository's
life. With --encryption-key-file every chunk and manifest is encrypted (AES-256-GCM) under a
random master key wrapped by that key: keep the key safe, a lost key is lost backups.

With --object-lock MODE:DURATION (governance or compliance, e.g. governance:30d) every backup
object is written with an S3 Object Lock retain-until date, so that nobody holding the S3
credentials, lifeboat included, can delete or overwrite a backup for DURATION after it was
made (in compliance mode not even the bucket's root user; in governance mode one with
s3:BypassGovernanceRetention can). The bucket must have Object Lock enabled, which S3 allows only
when it is created (--s3-create-bucket does so). The policy is recorded in the repository config:
every export applies it, and keeps the chunks it reuses locked as long as the new backup.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			q, err := resource.ParseQuantity(strings.TrimSuffix(strings.TrimSuffix(chunk, "B"), "b"))
			if err != nil {
				return fmt.Errorf("--chunk-size %q: use a size like 4MiB", chunk)
			}
			var ol *objectstore.ObjectLock
			if lock != "" {
				if ol, err = objectstore.ParseObjectLock(lock); err != nil {
					return fmt.Errorf("--object-lock: %w", err)
				}
				rf.s3.CreateWithObjectLock = true
			}
			be, err := rf.backend(cmd.Context(), cmd)
			if err != nil {
				return err
			}
			key, err := rf.key()
			if err != nil {
				return err
			}
			repo, err := objectstore.Init(cmd.Context(), be, objectstore.InitOptions{ChunkSize: int(q.Value()), Key: key, ObjectLock: ol})
			if err != nil {
				return err
			}
			c := repo.Config()
			locking := "no object lock"
			if c.ObjectLock != nil {
				locking = "object lock " + c.ObjectLock.String()
			}
			fmt.Fprintf(cmd.OutOrStdout(), "created repository %s in %s: chunk size %s, encryption %s, %s\n",
				c.ID[:12], be, bytesIEC(uint64(c.ChunkSize)), c.Encryption, locking)
			return nil
		},
	}
	addRepoFlags(initCmd, rf)
	initCmd.Flags().StringVar(&lock, "object-lock", "", "MODE:DURATION: lock every backup for DURATION (S3 Object Lock; MODE governance or compliance; e.g. governance:30d)")
	initCmd.Flags().StringVar(&chunk, "chunk-size", "1MiB", "chunk size, a power of two from 64KiB to 64MiB (1MiB: see the README's benchmark)")
	repo.AddCommand(initCmd, newPruneCmd(g), newLocksCmd(g), newUnlockCmd(), newKeyChangeCmd())
	return repo
}

// newKeyChangeCmd is `repo key-change`.
func newKeyChangeCmd() *cobra.Command {
	rf := &repoFlags{}
	var newFile string
	cmd := &cobra.Command{
		Use:   "key-change --encryption-key-file CURRENT --new-encryption-key-file NEW",
		Short: "Make another key the repository's encryption key (rewraps the master key; no data is rewritten)",
		Long: `key-change wraps the repository's master key under the new key and rewrites the config, one
atomic PUT: from then on only the new key opens the repository. Chunks and manifests are under the
master key and stay as they are, so it takes a second, whatever the repository's size, and
processes that opened the repository before (a running agent) go on working. Update the key the
agent reads (the Secret lifeboat-encryption-key) before it next restarts, and keep the new key
outside the cluster you protect: a lost key is lost backups.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if newFile == "" {
				return errors.New("--new-encryption-key-file is required")
			}
			next, err := readKey("--new-encryption-key-file", newFile)
			if err != nil {
				return err
			}
			repo, err := rf.open(cmd.Context(), cmd)
			if err != nil {
				return err
			}
			if cur, _ := rf.key(); bytes.Equal(cur, next) {
				return errors.New("the new key is the current key")
			}
			if err := repo.ChangeKey(cmd.Context(), next); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "repository %s now opens with the key in %s only\n", repo.Config().ID[:12], newFile)
			return nil
		},
	}
	addRepoFlags(cmd, rf)
	cmd.Flags().StringVar(&newFile, "new-encryption-key-file", "", "file holding the new key (trailing newline ignored)")
	return cmd
}
