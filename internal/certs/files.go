package certs

import (
	"bytes"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Pair is one certificate chain and its key, as PEM files.
type Pair struct {
	CertFile, KeyFile string
}

// loaded is a pair as last loaded successfully.
type loaded struct {
	cert  *tls.Certificate
	names []string // lower-case DNS names (and the CN when there are none)
	label string   // the expiry metric's name label
	sum   [32]byte // of the two files' contents
}

// fileSet is an immutable index of the loaded pairs; a reload builds a new
// one and swaps it in, so handshakes never take a lock.
type fileSet struct {
	exact map[string]*tls.Certificate // "www.example.com"
	wild  map[string]*tls.Certificate // "example.com" for "*.example.com"
	def   *tls.Certificate            // the first pair: for unknown or absent names
}

// files serves certificate pairs read from disk and reloads them when
// their contents change. Reload is safe to call from several goroutines;
// lookups read an atomic pointer.
type files struct {
	pairs []Pair
	log   *slog.Logger
	m     *Metrics
	now   func() time.Time

	set atomic.Pointer[fileSet]

	mu      sync.Mutex // serialises reloads; guards cur and badSum
	cur     []*loaded
	badSum  [][32]byte // contents last reported bad, so a bad file is logged once
	badSeen []bool
}

func newFiles(pairs []Pair, log *slog.Logger, m *Metrics, now func() time.Time) (*files, error) {
	f := &files{pairs: pairs, log: log, m: m, now: now,
		cur: make([]*loaded, len(pairs)), badSum: make([][32]byte, len(pairs)), badSeen: make([]bool, len(pairs))}
	for i, p := range pairs {
		l, err := f.load(p)
		if err != nil {
			f.m.reloads.WithLabelValues("error").Inc()
			return nil, err
		}
		f.cur[i] = l
		f.observe(l)
		f.m.reloads.WithLabelValues("ok").Inc()
	}
	f.publish()
	return f, nil
}

// load reads and checks one pair.
func (f *files) load(p Pair) (*loaded, error) {
	certPEM, err := os.ReadFile(p.CertFile)
	if err != nil {
		return nil, fmt.Errorf("certificate %s: %w", p.CertFile, err)
	}
	keyPEM, err := os.ReadFile(p.KeyFile)
	if err != nil {
		return nil, fmt.Errorf("key %s: %w", p.KeyFile, err)
	}
	return parsePair(p, certPEM, keyPEM)
}

func parsePair(p Pair, certPEM, keyPEM []byte) (*loaded, error) {
	sum := sha256.Sum256(append(append(bytes.Clone(certPEM), 0), keyPEM...))
	c, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return nil, fmt.Errorf("pair %s + %s: %w", p.CertFile, p.KeyFile, err)
	}
	leaf := c.Leaf
	if leaf == nil {
		if leaf, err = x509.ParseCertificate(c.Certificate[0]); err != nil {
			return nil, fmt.Errorf("certificate %s: %w", p.CertFile, err)
		}
		c.Leaf = leaf
	}
	l := &loaded{cert: &c, sum: sum}
	for _, n := range leaf.DNSNames {
		l.names = append(l.names, strings.ToLower(strings.TrimSuffix(n, ".")))
	}
	if len(l.names) == 0 && leaf.Subject.CommonName != "" {
		l.names = []string{strings.ToLower(leaf.Subject.CommonName)}
	}
	l.label = p.CertFile
	if len(l.names) > 0 {
		l.label = l.names[0]
	}
	return l, nil
}

// observe sets the expiry metric and warns about a certificate outside its
// validity: it is served anyway (the alert fires on the metric), because
// refusing it would take the whole TLS listener down with it.
func (f *files) observe(l *loaded) {
	leaf := l.cert.Leaf
	f.m.expiry.WithLabelValues(l.label).Set(float64(leaf.NotAfter.Unix()))
	now := f.now()
	switch {
	case now.After(leaf.NotAfter):
		f.log.Warn("TLS certificate has expired; serving it until it is replaced", "name", l.label, "not_after", leaf.NotAfter)
	case now.Before(leaf.NotBefore):
		f.log.Warn("TLS certificate is not valid yet", "name", l.label, "not_before", leaf.NotBefore)
	}
}

// publish builds and swaps the lookup index; f.mu held or during construction.
func (f *files) publish() {
	s := &fileSet{exact: map[string]*tls.Certificate{}, wild: map[string]*tls.Certificate{}}
	for i, l := range f.cur {
		if i == 0 {
			s.def = l.cert
		}
		for _, n := range l.names {
			if rest, ok := strings.CutPrefix(n, "*."); ok {
				if _, dup := s.wild[rest]; !dup {
					s.wild[rest] = l.cert
				}
			} else if _, dup := s.exact[n]; !dup {
				s.exact[n] = l.cert
			}
		}
	}
	f.set.Store(s)
}

// lookup finds the pair for a lower-case server name: an exact name, then a
// wildcard one label deep; nil when none matches.
func (f *files) lookup(name string) *tls.Certificate {
	s := f.set.Load()
	if c := s.exact[name]; c != nil {
		return c
	}
	if _, rest, ok := strings.Cut(name, "."); ok {
		return s.wild[rest]
	}
	return nil
}

func (f *files) defaultCert() *tls.Certificate { return f.set.Load().def }

// reload re-reads every pair and swaps in those whose contents changed and
// load cleanly. A pair that fails keeps its previous certificate; the
// failure is logged at error level and counted once per distinct content.
// It reports how many pairs were replaced and the first failure.
func (f *files) reload() (int, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	changed := 0
	var first error
	for i, p := range f.pairs {
		certPEM, err1 := os.ReadFile(p.CertFile)
		keyPEM, err2 := os.ReadFile(p.KeyFile)
		var l *loaded
		var err error
		var sum [32]byte
		if err = errors.Join(err1, err2); err == nil {
			sum = sha256.Sum256(append(append(bytes.Clone(certPEM), 0), keyPEM...))
			if sum == f.cur[i].sum {
				f.badSeen[i] = false
				continue
			}
			l, err = parsePair(p, certPEM, keyPEM)
		}
		if err != nil {
			if first == nil {
				first = err
			}
			if f.badSeen[i] && f.badSum[i] == sum {
				continue // already reported
			}
			f.badSeen[i], f.badSum[i] = true, sum
			f.m.reloads.WithLabelValues("error").Inc()
			f.log.Error("TLS certificate reload failed; the previous certificate stays in use",
				"cert_file", p.CertFile, "key_file", p.KeyFile, "err", err)
			continue
		}
		f.badSeen[i] = false
		if old := f.cur[i]; old.label != l.label {
			f.m.expiry.DeleteLabelValues(old.label)
		}
		f.cur[i] = l
		f.observe(l)
		f.m.reloads.WithLabelValues("ok").Inc()
		f.log.Info("TLS certificate loaded", "name", l.label, "not_after", l.cert.Leaf.NotAfter, "cert_file", p.CertFile)
		changed++
	}
	if changed > 0 {
		f.publish()
	}
	return changed, first
}
