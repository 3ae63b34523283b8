// Command stateback snapshots the proxy's state directory (a compose named
// volume: active colour, generation, history, and whatever else the proxy
// keeps there) into a backups directory, and restores a snapshot.
//
//	stateback loop              snapshot every BACKUP_INTERVAL (1h), keep the
//	                            newest BACKUP_KEEP (48)
//	stateback snapshot          one snapshot now, with the same retention
//	stateback list              snapshots, newest first
//	stateback restore [NAME]    replace the state with snapshot NAME (default:
//	                            the newest); the proxy must be stopped
//
// Snapshots are gzip'ed tar files named state-<UTC time>.tar.gz, written to a
// temporary name and renamed, so a snapshot is complete or absent. Paths:
// STATE_DIR (/state), BACKUP_DIR (/backups).
package main

import (
	"archive/tar"
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
)

func main() {
	stateDir := env("STATE_DIR", "/state")
	backupDir := env("BACKUP_DIR", "/backups")
	keep, err := strconv.Atoi(env("BACKUP_KEEP", "48"))
	if err != nil || keep < 1 {
		fail(2, "BACKUP_KEEP=%q: expected an integer of at least 1", os.Getenv("BACKUP_KEEP"))
	}
	cmd := ""
	if len(os.Args) > 1 {
		cmd = os.Args[1]
	}
	switch cmd {
	case "snapshot":
		name, err := snapshot(stateDir, backupDir, keep, time.Now())
		if err != nil {
			fail(1, "snapshot: %v", err)
		}
		fmt.Println(name)
	case "loop":
		every, err := time.ParseDuration(env("BACKUP_INTERVAL", "1h"))
		if err != nil || every < time.Second {
			fail(2, "BACKUP_INTERVAL=%q: expected a duration of at least 1s", os.Getenv("BACKUP_INTERVAL"))
		}
		ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
		defer stop()
		for {
			if name, err := snapshot(stateDir, backupDir, keep, time.Now()); err != nil {
				fmt.Fprintf(os.Stderr, "%s snapshot failed: %v\n", time.Now().UTC().Format(time.RFC3339), err)
			} else {
				fmt.Printf("%s snapshot %s\n", time.Now().UTC().Format(time.RFC3339), name)
			}
			select {
			case <-ctx.Done():
				return
			case <-time.After(every):
			}
		}
	case "list":
		names, err := list(backupDir)
		if err != nil {
			fail(1, "list: %v", err)
		}
		for _, n := range names {
			fmt.Println(n)
		}
	case "restore":
		name := ""
		if len(os.Args) > 2 {
			name = os.Args[2]
		}
		got, err := restore(stateDir, backupDir, name)
		if err != nil {
			fail(1, "restore: %v", err)
		}
		fmt.Printf("restored %s into %s\n", got, stateDir)
	default:
		fail(2, "usage: stateback loop|snapshot|list|restore [NAME]")
	}
}

func env(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}

func fail(code int, format string, a ...any) {
	fmt.Fprintf(os.Stderr, "stateback: "+format+"\n", a...)
	os.Exit(code)
}

const prefix, suffix = "state-", ".tar.gz"

// list returns the snapshots in dir, newest first (names sort by time).
func list(dir string) ([]string, error) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	var names []string
	for _, e := range ents {
		if n := e.Name(); e.Type().IsRegular() && strings.HasPrefix(n, prefix) && strings.HasSuffix(n, suffix) {
			names = append(names, n)
		}
	}
	slices.Sort(names)
	slices.Reverse(names)
	return names, nil
}

// snapshot writes every regular file under stateDir into a new snapshot and
// removes the oldest ones beyond keep.
func snapshot(stateDir, backupDir string, keep int, now time.Time) (string, error) {
	name := prefix + now.UTC().Format("20060102T150405.000000000Z") + suffix
	tmp, err := os.CreateTemp(backupDir, ".tmp-*")
	if err != nil {
		return "", err
	}
	defer os.Remove(tmp.Name())
	zw := gzip.NewWriter(tmp)
	tw := tar.NewWriter(zw)
	files := 0
	err = filepath.WalkDir(stateDir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(stateDir, p)
		if rel == "." || (!d.IsDir() && !d.Type().IsRegular()) {
			return nil
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		hdr, err := tar.FileInfoHeader(info, "")
		if err != nil {
			return err
		}
		hdr.Name = filepath.ToSlash(rel)
		if d.IsDir() {
			hdr.Name += "/"
		}
		if err := tw.WriteHeader(hdr); err != nil {
			return err
		}
		if d.IsDir() {
			return nil
		}
		f, err := os.Open(p)
		if err != nil {
			return err
		}
		defer f.Close()
		files++
		_, err = io.Copy(tw, f)
		return err
	})
	if err == nil {
		err = tw.Close()
	}
	if err == nil {
		err = zw.Close()
	}
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return "", err
	}
	if files == 0 {
		return "", fmt.Errorf("%s holds no file yet", stateDir)
	}
	if err := os.Rename(tmp.Name(), filepath.Join(backupDir, name)); err != nil {
		return "", err
	}
	names, err := list(backupDir)
	if err != nil {
		return name, err
	}
	for _, old := range names[min(keep, len(names)):] {
		if err := os.Remove(filepath.Join(backupDir, old)); err != nil {
			return name, err
		}
	}
	return name, nil
}

// restore replaces the content of stateDir with snapshot name (the newest
// when empty).
func restore(stateDir, backupDir, name string) (string, error) {
	if name == "" || name == "latest" {
		names, err := list(backupDir)
		if err != nil {
			return "", err
		}
		if len(names) == 0 {
			return "", errors.New("no snapshot in " + backupDir)
		}
		name = names[0]
	}
	if filepath.Base(name) != name {
		return "", fmt.Errorf("%q: a snapshot name, not a path", name)
	}
	f, err := os.Open(filepath.Join(backupDir, name))
	if err != nil {
		return "", err
	}
	defer f.Close()
	zr, err := gzip.NewReader(f)
	if err != nil {
		return "", err
	}
	// Read the whole snapshot before touching the state.
	type file struct {
		name string
		dir  bool
		mode fs.FileMode
		data []byte
	}
	var files []file
	tr := tar.NewReader(zr)
	for {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return "", fmt.Errorf("%s: %w", name, err)
		}
		clean := filepath.Clean(filepath.FromSlash(hdr.Name))
		if !filepath.IsLocal(clean) {
			return "", fmt.Errorf("%s: entry %q leaves the state directory", name, hdr.Name)
		}
		data, err := io.ReadAll(io.LimitReader(tr, 64<<20))
		if err != nil {
			return "", err
		}
		files = append(files, file{clean, hdr.Typeflag == tar.TypeDir, fs.FileMode(hdr.Mode).Perm(), data})
	}
	ents, err := os.ReadDir(stateDir)
	if err != nil {
		return "", err
	}
	for _, e := range ents {
		if err := os.RemoveAll(filepath.Join(stateDir, e.Name())); err != nil {
			return "", err
		}
	}
	for _, fl := range files {
		p := filepath.Join(stateDir, fl.name)
		if fl.dir {
			if err := os.MkdirAll(p, 0o700); err != nil {
				return "", err
			}
			continue
		}
		if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
			return "", err
		}
		if err := os.WriteFile(p, fl.data, fl.mode|0o600); err != nil {
			return "", err
		}
	}
	return name, nil
}
