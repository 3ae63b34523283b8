// Package certs serves TLS certificates to the public TLS listener: pairs
// of PEM files chosen by server name (SNI) and reloaded when they change,
// and certificates obtained and renewed through ACME (certmagic). It also
// holds the listener's TLS profile and its handshake accounting.
package certs

import (
	"context"
	"crypto/tls"
	"errors"
	"log"
	"log/slog"
	"net/http"
	"slices"
	"strings"
	"time"
)

// Config configures a Manager.
type Config struct {
	Pairs []Pair // the first pair is the default certificate
	ACME  *ACME  // nil: no ACME
	// PollInterval is how often the files are checked for new contents;
	// default 1s.
	PollInterval time.Duration
	Metrics      *Metrics
	Log          *slog.Logger
	Now          func() time.Time
}

// Manager chooses the certificate of each handshake. Its methods are safe
// for concurrent use; handshakes read atomics and never wait for a reload.
type Manager struct {
	files *files // nil without pairs
	acme  *acmeManager
	m     *Metrics
	log   *slog.Logger
	poll  time.Duration
}

// errUnknownName fails a handshake for a server name that has no
// certificate when there is no default either.
var errUnknownName = errors.New("certs: no certificate for this server name")

// New loads the file pairs (every one must load) and prepares ACME. Call
// LoadStored (ACME) before serving, then Run to watch the files and to
// start ordering.
func New(cfg Config) (*Manager, error) {
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.PollInterval <= 0 {
		cfg.PollInterval = time.Second
	}
	mg := &Manager{m: cfg.Metrics, log: cfg.Log, poll: cfg.PollInterval}
	if len(cfg.Pairs) > 0 {
		f, err := newFiles(cfg.Pairs, cfg.Log, cfg.Metrics, cfg.Now)
		if err != nil {
			return nil, err
		}
		mg.files = f
	}
	if cfg.ACME != nil {
		a, err := newACME(*cfg.ACME, cfg.Log, cfg.Metrics)
		if err != nil {
			return nil, err
		}
		mg.acme = a
	}
	if mg.files == nil && mg.acme == nil {
		return nil, errors.New("certs: no certificate files and no ACME domains")
	}
	return mg, nil
}

// LoadStored puts the ACME certificates already in storage to use, giving
// up when ctx ends. Call it before the listener accepts and before Run:
// Run loads them too, but in the background, and handshakes fail until
// then (after a restart, although a valid certificate is stored).
func (mg *Manager) LoadStored(ctx context.Context) {
	if mg.acme != nil {
		mg.acme.loadStored(ctx)
	}
}

// Run watches the certificate files (polling their contents) and, with
// ACME, manages the domains, until ctx ends.
func (mg *Manager) Run(ctx context.Context) {
	if mg.acme != nil {
		defer mg.acme.stop()
		if err := mg.acme.start(ctx); err != nil {
			mg.log.Error("ACME: cannot manage the domains", "err", err)
		}
	}
	t := time.NewTicker(mg.poll)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if mg.files != nil {
				_, _ = mg.files.reload()
			}
			if mg.acme != nil {
				mg.acme.observe(mg.m)
			}
		}
	}
}

// Reload re-reads the certificate files now (SIGHUP). It returns how many
// pairs were replaced and the first failure; failed pairs keep serving.
func (mg *Manager) Reload() (int, error) {
	if mg.files == nil {
		return 0, nil
	}
	return mg.files.reload()
}

// GetCertificate is the tls.Config hook. Order: an ACME TLS-ALPN-01
// validation; a file pair for the name (exact, then wildcard); an ACME
// certificate for the name; the default (the first pair, else the first
// ACME domain's); otherwise the handshake fails.
func (mg *Manager) GetCertificate(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
	if mg.acme != nil && slices.Contains(hello.SupportedProtos, acmeTLS1) {
		return mg.acme.getCertificate(hello)
	}
	name := strings.ToLower(strings.TrimSuffix(hello.ServerName, "."))
	if mg.files != nil {
		if c := mg.files.lookup(name); c != nil {
			return c, nil
		}
	}
	if mg.acme != nil && (mg.files == nil || mg.acme.manages(name)) {
		if c, err := mg.acme.getCertificate(hello); err == nil {
			return c, nil
		}
	}
	if mg.files != nil {
		return mg.files.defaultCert(), nil
	}
	return nil, errUnknownName
}

const acmeTLS1 = "acme-tls/1"

// TLSConfig is the listener's configuration: Mozilla's "intermediate"
// profile. TLS 1.2 and 1.3; in TLS 1.2 only ECDHE key exchange with AEAD
// ciphers (AES-GCM, ChaCha20-Poly1305: no CBC); key exchange groups
// X25519MLKEM768 (hybrid post-quantum, offered by current browsers),
// X25519 and P-256; ALPN h2 then http/1.1 (and acme-tls/1 with ACME).
// Session tickets are on; Go rotates their keys itself (a new key every
// 24 h, each accepted for 7 days) since SetSessionTicketKeys is not called.
func (mg *Manager) TLSConfig() *tls.Config {
	protos := []string{"h2", "http/1.1"}
	if mg.acme != nil {
		protos = append(protos, acmeTLS1)
	}
	return &tls.Config{
		MinVersion: tls.VersionTLS12,
		CipherSuites: []uint16{
			tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
			tls.TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
			tls.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
			tls.TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
			tls.TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
			tls.TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
		},
		CurvePreferences: []tls.CurveID{tls.X25519MLKEM768, tls.X25519, tls.CurveP256},
		NextProtos:       protos,
		GetCertificate:   mg.GetCertificate,
		VerifyConnection: func(tls.ConnectionState) error {
			mg.m.handshakes.WithLabelValues(ResultOK).Inc()
			return nil
		},
	}
}

// HTTPChallenge wraps the plain listener's handler: ACME HTTP-01
// validation requests are answered, everything else goes to next.
func (mg *Manager) HTTPChallenge(next http.Handler) http.Handler {
	if mg.acme == nil || mg.acme.issuer.DisableHTTPChallenge {
		return next
	}
	return mg.acme.issuer.HTTPChallengeHandler(next)
}

// ErrorLog is the TLS server's ErrorLog. net/http reports a failed
// handshake only through it, one line per connection: those lines are
// counted by cause and logged at debug level (a scanner or a broken client
// must not flood the log at error level); other lines go to l at warn.
func (mg *Manager) ErrorLog(l *slog.Logger) *log.Logger {
	return log.New(errorLogWriter{mg: mg, l: l}, "", 0)
}

type errorLogWriter struct {
	mg *Manager
	l  *slog.Logger
}

func (w errorLogWriter) Write(p []byte) (int, error) {
	line := strings.TrimSpace(string(p))
	if _, reason, ok := strings.Cut(line, "TLS handshake error from "); ok {
		result := classify(reason)
		w.mg.m.handshakes.WithLabelValues(result).Inc()
		w.l.Debug("TLS handshake failed", "result", result, "detail", reason)
		return len(p), nil
	}
	w.l.Warn(line)
	return len(p), nil
}

func classify(reason string) string {
	switch {
	case strings.Contains(reason, "client sent an HTTP request to an HTTPS server"):
		return ResultPlainHTTP
	case strings.Contains(reason, errUnknownName.Error()):
		return ResultUnknownName
	case strings.HasSuffix(reason, "EOF"), strings.Contains(reason, "connection reset"),
		strings.Contains(reason, "i/o timeout"), strings.Contains(reason, "broken pipe"):
		return ResultClosed
	}
	return ResultFailed
}
