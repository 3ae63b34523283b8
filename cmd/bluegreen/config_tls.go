package main

import (
	"crypto/x509"
	"net"
	"net/mail"
	"net/url"
	"os"
	"strconv"
	"strings"

	"github.com/cryoprotect/bluegreen/internal/certs"
)

// tlsOptions is the TLS configuration after validation.
type tlsOptions struct {
	pairs   []certs.Pair
	domains []string
	roots   *x509.CertPool // nil: the system roots
}

// loadTLS validates the TLS and ACME variables into cfg.tls. Certificate
// files are only split here; they are loaded (and a bad pair refused) when
// the listener starts.
func (cfg *Config) loadTLS(bad func(name, value, expected string)) {
	needListen := func(name, value string) {
		if cfg.TLSListen == "" {
			bad(name, value, "needs BLUEGREEN_TLS_LISTEN (the TLS listener), e.g. :8443")
		}
	}
	if cfg.TLSListen != "" {
		if _, _, err := net.SplitHostPort(cfg.TLSListen); err != nil {
			bad("TLS_LISTEN", cfg.TLSListen, "expected host:port or :port")
		} else if cfg.TLSListen == cfg.Listen && !strings.HasSuffix(cfg.TLSListen, ":0") {
			bad("TLS_LISTEN", cfg.TLSListen, "must differ from BLUEGREEN_LISTEN")
		}
	}

	certFiles, keyFiles := splitList(cfg.TLSCertFile), splitList(cfg.TLSKeyFile)
	switch {
	case len(certFiles) != len(keyFiles):
		bad("TLS_KEY_FILE", cfg.TLSKeyFile, "expected one key file for each file in BLUEGREEN_TLS_CERT_FILE ("+strconv.Itoa(len(certFiles))+")")
	case len(certFiles) > 0:
		needListen("TLS_CERT_FILE", cfg.TLSCertFile)
		for i := range certFiles {
			cfg.tls.pairs = append(cfg.tls.pairs, certs.Pair{CertFile: certFiles[i], KeyFile: keyFiles[i]})
		}
	}

	cfg.tls.domains = splitList(cfg.ACMEDomains)
	for _, d := range cfg.tls.domains {
		if !validDomain(d) {
			bad("ACME_DOMAINS", cfg.ACMEDomains, "expected comma-separated DNS names such as example.com,www.example.com (no wildcards: they need DNS-01; no IP addresses)")
			break
		}
	}
	acme := len(cfg.tls.domains) > 0
	if acme {
		needListen("ACME_DOMAINS", cfg.ACMEDomains)
		if strings.TrimSpace(cfg.ACMEStorage) == "" {
			bad("ACME_STORAGE", cfg.ACMEStorage, "expected a directory for the ACME account and certificates")
		}
	}
	if cfg.ACMEEmail != "" {
		if a, err := mail.ParseAddress(cfg.ACMEEmail); err != nil || a.Address != cfg.ACMEEmail {
			bad("ACME_EMAIL", cfg.ACMEEmail, "expected an e-mail address such as ops@example.com")
		}
	}
	if cfg.ACMECA != "" {
		if u, err := url.Parse(cfg.ACMECA); err != nil || u.Scheme != "https" || u.Host == "" {
			bad("ACME_CA", cfg.ACMECA, "expected the https:// URL of an ACME directory, e.g. https://acme-staging-v02.api.letsencrypt.org/directory")
		}
	}
	if cfg.ACMECARootFile != "" {
		b, err := os.ReadFile(cfg.ACMECARootFile)
		pool := x509.NewCertPool()
		switch {
		case err != nil:
			bad("ACME_CA_ROOT_FILE", cfg.ACMECARootFile, "cannot read the root certificate: "+shortFileError(err))
		case !pool.AppendCertsFromPEM(b):
			bad("ACME_CA_ROOT_FILE", cfg.ACMECARootFile, "expected a PEM file with at least one CERTIFICATE block")
		default:
			cfg.tls.roots = pool
		}
	}
	if cfg.TLSListen != "" && len(cfg.tls.pairs) == 0 && !acme {
		bad("TLS_LISTEN", cfg.TLSListen, "needs certificates: set BLUEGREEN_TLS_CERT_FILE and BLUEGREEN_TLS_KEY_FILE, or BLUEGREEN_ACME_DOMAINS")
	}
	if cfg.HTTPRedirect {
		needListen("HTTP_REDIRECT", "true")
	}
	if cfg.H2 != "fast" && cfg.H2 != "nethttp" {
		bad("H2", cfg.H2, "expected fast (the proxy's own HTTP/2 codec) or nethttp (Go's HTTP/2 server)")
	}
	if cfg.HSTS != "" {
		needListen("HSTS", cfg.HSTS)
		if !validHSTS(cfg.HSTS) {
			bad("HSTS", cfg.HSTS, "expected a Strict-Transport-Security value such as max-age=31536000 or max-age=31536000; includeSubDomains")
		}
	}
}

func splitList(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

// validDomain accepts a DNS name an ACME CA can validate by HTTP-01 or
// TLS-ALPN-01: letters, digits, hyphens, dots; no wildcard, no IP.
func validDomain(d string) bool {
	if len(d) > 253 || net.ParseIP(d) != nil {
		return false
	}
	for _, label := range strings.Split(d, ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		for _, c := range label {
			if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-') {
				return false
			}
		}
	}
	return true
}

// validHSTS checks RFC 6797's syntax loosely: a max-age with a number,
// optionally includeSubDomains and preload.
func validHSTS(v string) bool {
	maxAge := false
	for _, d := range strings.Split(v, ";") {
		d = strings.TrimSpace(d)
		name, val, _ := strings.Cut(d, "=")
		switch strings.ToLower(name) {
		case "max-age":
			if _, err := strconv.ParseUint(strings.Trim(val, `"`), 10, 64); err != nil {
				return false
			}
			maxAge = true
		case "includesubdomains", "preload":
		default:
			return false
		}
	}
	return maxAge
}
