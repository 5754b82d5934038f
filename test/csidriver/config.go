package csidriver

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
)

// ClusterInfo is one entry of ceph-csi's config.json (internal/util/
// csiconfig.go), the JSON Rook keeps in ConfigMap rook-ceph-csi-config, key
// csi-cluster-config-json.
type ClusterInfo struct {
	ClusterID string   `json:"clusterID"`
	Monitors  []string `json:"monitors"`
	RBD       struct {
		RadosNamespace string `json:"radosNamespace"`
	} `json:"rbd"`
}

// ErrNoCluster is wrapped when the config has no entry for a clusterID.
var ErrNoCluster = errors.New("missing configuration for cluster ID")

// ReadConfig reads the config file and returns the entry for clusterID.
// Like ceph-csi the driver calls it on every request, so rewriting the file
// repoints a clusterID at once.
func ReadConfig(path, clusterID string) (ClusterInfo, error) {
	list, err := readConfigFile(path)
	if err != nil {
		return ClusterInfo{}, err
	}
	for _, c := range list {
		if c.ClusterID == clusterID {
			if len(c.Monitors) == 0 {
				return c, fmt.Errorf("config %s: cluster ID %q lists no monitors", path, clusterID)
			}
			return c, nil
		}
	}
	return ClusterInfo{}, fmt.Errorf("%w %q in %s", ErrNoCluster, clusterID, path)
}

func readConfigFile(path string) ([]ClusterInfo, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("ceph-csi config: %w", err)
	}
	var list []ClusterInfo
	if err := json.Unmarshal(b, &list); err != nil {
		return nil, fmt.Errorf("ceph-csi config %s: not a JSON list of clusters: %w", path, err)
	}
	return list, nil
}

// SetCluster adds or replaces the entry of c.ClusterID in the config file,
// keeping the others: under an exclusive flock on <path>.lock, it writes a
// temporary file and renames it over path, so readers never see a partial
// file and concurrent writers never lose each other's entries.
func SetCluster(path string, c ClusterInfo) error {
	lock, err := os.OpenFile(path+".lock", os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return err
	}
	defer lock.Close()
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX); err != nil {
		return fmt.Errorf("lock %s.lock: %w", path, err)
	}
	list, err := readConfigFile(path)
	if errors.Is(err, os.ErrNotExist) {
		list, err = nil, nil
	}
	if err != nil {
		return err
	}
	replaced := false
	for i := range list {
		if list[i].ClusterID == c.ClusterID {
			list[i], replaced = c, true
		}
	}
	if !replaced {
		list = append(list, c)
	}
	b, err := json.MarshalIndent(list, "", "  ")
	if err != nil {
		return err
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), filepath.Base(path)+".tmp*")
	if err != nil {
		return err
	}
	_, err = tmp.Write(append(b, '\n'))
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Chmod(tmp.Name(), 0o644)
	}
	if err == nil {
		err = os.Rename(tmp.Name(), path)
	}
	if err != nil {
		os.Remove(tmp.Name())
	}
	return err
}
