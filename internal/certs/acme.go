package certs

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/caddyserver/certmagic"
)

// ACME configures automatic certificates.
type ACME struct {
	Domains []string
	Email   string
	// CA is the directory URL; empty: Let's Encrypt production.
	CA string
	// Roots, when set, are the roots trusted for the CA's HTTPS endpoint
	// (a private CA); nil: the system roots.
	Roots *x509.CertPool
	// Storage is the directory for the account, keys and certificates.
	Storage string
	// Store, when set, replaces the directory (certificates in etcd for a
	// fleet: internal/certs/etcdstore); its locks make one replica order.
	Store certmagic.Storage
	// HTTPAddr and TLSAddr are the bound plain and TLS listeners, where
	// the CA's HTTP-01 and TLS-ALPN-01 validations arrive. HTTPAddr empty
	// disables HTTP-01.
	HTTPAddr, TLSAddr string
	// DisableTLSALPN turns TLS-ALPN-01 off (HTTP-01 only).
	DisableTLSALPN bool
	// RenewCheckInterval is how often certificates are checked for
	// renewal (default 10m); RenewalWindowRatio the share of a
	// certificate's lifetime left when it is renewed (default 1/3).
	RenewCheckInterval time.Duration
	RenewalWindowRatio float64
}

// acmeManager obtains and renews certificates through certmagic.
type acmeManager struct {
	domains map[string]bool
	first   string
	cache   *certmagic.Cache
	magic   *certmagic.Config
	issuer  *certmagic.ACMEIssuer
	list    []string
	log     *slog.Logger
	// renewing counts the renewals start runs in the background.
	renewing sync.WaitGroup
}

// hostPort splits a bound listener address for certmagic, which first
// tries to bind the challenge port itself and, finding it taken (by our
// listener), assumes the challenge is answered there.
func hostPort(addr string) (string, int, error) {
	h, p, err := net.SplitHostPort(addr)
	if err != nil {
		return "", 0, err
	}
	n, err := strconv.Atoi(p)
	return h, n, err
}

func newACME(c ACME, log *slog.Logger, m *Metrics) (*acmeManager, error) {
	if len(c.Domains) == 0 {
		return nil, errors.New("no ACME domains")
	}
	a := &acmeManager{domains: map[string]bool{}, list: c.Domains, first: strings.ToLower(c.Domains[0]), log: log}
	for _, d := range c.Domains {
		a.domains[strings.ToLower(d)] = true
	}
	zl := zapToSlog(log)
	var magic *certmagic.Config
	a.cache = certmagic.NewCache(certmagic.CacheOptions{
		GetConfigForCert:   func(certmagic.Certificate) (*certmagic.Config, error) { return magic, nil },
		RenewCheckInterval: c.RenewCheckInterval,
		Logger:             zl,
	})
	var storage certmagic.Storage = &certmagic.FileStorage{Path: c.Storage}
	if c.Store != nil {
		storage = c.Store
	}
	magic = certmagic.New(a.cache, certmagic.Config{
		Storage:            storage,
		RenewalWindowRatio: c.RenewalWindowRatio,
		DefaultServerName:  a.first,
		FallbackServerName: a.first,
		Logger:             zl,
		OnEvent: func(_ context.Context, event string, data map[string]any) error {
			a.event(event, data, log, m)
			return nil
		},
	})
	tmpl := certmagic.ACMEIssuer{
		CA: c.CA, Email: c.Email, Agreed: true, TrustedRoots: c.Roots,
		DisableTLSALPNChallenge: c.DisableTLSALPN,
		DisableHTTPChallenge:    c.HTTPAddr == "",
		Logger:                  zl,
	}
	if tmpl.CA == "" {
		tmpl.CA = certmagic.LetsEncryptProductionCA
	}
	if c.HTTPAddr != "" {
		h, p, err := hostPort(c.HTTPAddr)
		if err != nil {
			a.cache.Stop()
			return nil, fmt.Errorf("plain listener %q: %w", c.HTTPAddr, err)
		}
		tmpl.ListenHost, tmpl.AltHTTPPort = h, p
	}
	if c.TLSAddr != "" {
		h, p, err := hostPort(c.TLSAddr)
		if err != nil {
			a.cache.Stop()
			return nil, fmt.Errorf("TLS listener %q: %w", c.TLSAddr, err)
		}
		if c.HTTPAddr == "" {
			tmpl.ListenHost = h
		}
		tmpl.AltTLSALPNPort = p
	}
	a.magic = magic
	a.issuer = certmagic.NewACMEIssuer(magic, tmpl)
	magic.Issuers = []certmagic.Issuer{a.issuer}
	return a, nil
}

func (a *acmeManager) event(event string, data map[string]any, log *slog.Logger, m *Metrics) {
	renewal, _ := data["renewal"].(bool)
	switch event {
	case "cert_obtained":
		if renewal {
			m.orders.WithLabelValues("renewed").Inc()
		} else {
			m.orders.WithLabelValues("obtained").Inc()
		}
		log.Info("ACME certificate obtained", "name", data["identifier"], "renewal", renewal)
	case "cert_failed":
		m.orders.WithLabelValues("failed").Inc()
		log.Error("ACME certificate order failed; retrying with backoff", "name", data["identifier"], "renewal", renewal, "err", data["error"])
	}
}

// loadStored caches the certificates already in storage, to be served from
// the first handshake on. One that is still valid is kept even when it is
// due for renewal (by the configured ratio or by ARI, whose randomly
// selected renewal time can make a fresh certificate due): start renews it
// in the background while it keeps being served, also when the CA cannot
// be reached. An expired one is dropped again; start orders its successor.
func (a *acmeManager) loadStored(ctx context.Context) {
	for _, d := range a.list {
		c, err := a.magic.CacheManagedCertificate(ctx, d)
		if err == nil && c.Expired() {
			a.cache.Remove([]string{c.Hash()})
		}
	}
}

// start manages the domains in the background: certificates missing from
// the cache are loaded from storage or ordered, all are renewed before
// they expire. certmagic leaves a domain whose certificate is already
// cached to its maintenance loop, which looks every RenewCheckInterval
// (10 minutes by default): a cached one that is due already (loadStored) is
// renewed here at once, and replaced in the cache when its successor is
// in storage. The renewal retries with backoff until ctx ends.
func (a *acmeManager) start(ctx context.Context) error {
	due := a.dueCached()
	if err := a.magic.ManageAsync(ctx, a.list); err != nil {
		return err
	}
	for _, old := range due {
		a.renewing.Go(func() { a.renew(ctx, old) })
	}
	return nil
}

// dueCached returns the cached certificates of the domains that are due
// for renewal.
func (a *acmeManager) dueCached() []certmagic.Certificate {
	var due []certmagic.Certificate
	seen := map[string]bool{}
	for _, d := range a.list {
		for _, c := range a.cache.AllMatchingCertificates(d) {
			if !seen[c.Hash()] && c.NeedsRenewal(a.magic) {
				seen[c.Hash()] = true
				due = append(due, c)
			}
		}
	}
	return due
}

// renew renews old's first name and puts the successor in the cache in
// place of old. certmagic orders only when the certificate in storage is
// still due (holding the storage lock, so the maintenance loop or another
// replica renewing it at the same time order once); either way the one in
// storage is then loaded, and old leaves the cache if it was replaced.
func (a *acmeManager) renew(ctx context.Context, old certmagic.Certificate) {
	name := old.Names[0]
	if err := a.magic.RenewCertAsync(ctx, name, false); err != nil {
		if ctx.Err() == nil {
			a.log.Error("ACME: renewing the stored certificate failed", "name", name, "err", err)
		}
		return
	}
	c, err := a.magic.CacheManagedCertificate(ctx, name)
	if err != nil {
		a.log.Error("ACME: loading the renewed certificate failed", "name", name, "err", err)
		return
	}
	if c.Hash() != old.Hash() {
		a.cache.Remove([]string{old.Hash()})
	}
}

// observe sets the expiry metric of each domain's newest cached certificate.
func (a *acmeManager) observe(m *Metrics) {
	for _, d := range a.list {
		var newest time.Time
		for _, c := range a.cache.AllMatchingCertificates(d) {
			if c.Leaf != nil && c.Leaf.NotAfter.After(newest) {
				newest = c.Leaf.NotAfter
			}
		}
		if !newest.IsZero() {
			m.expiry.WithLabelValues(d).Set(float64(newest.Unix()))
		}
	}
}

func (a *acmeManager) manages(name string) bool { return a.domains[name] }

func (a *acmeManager) getCertificate(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
	return a.magic.GetCertificate(hello)
}

// stop ends the maintenance; call it after the context given to start has
// ended, it waits for the renewals started there.
func (a *acmeManager) stop() {
	a.renewing.Wait()
	a.cache.Stop()
}
