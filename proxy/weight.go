package proxy

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"net/http"
	"strings"
	"unsafe"

	"github.com/cryoprotect/bluegreen/proxy/h1"
)

// RolloutCookie is the cookie that carries a client's rollout key when the
// key comes from a cookie: a random id the proxy sets when it is absent.
const RolloutCookie = "bluegreen_rollout"

// rolloutCookieMaxAge keeps a client on its side of a rollout for 30 days.
const rolloutCookieMaxAge = 30 * 24 * 3600

// weightScale is the resolution of the target share: a client's key hashes
// to a bucket in [0, weightScale), and a weight of w percent sends buckets
// below w·weightScale/100 to the target.
const weightScale = 10000

// KeyKind is where a client's rollout key comes from.
type KeyKind uint8

// Key sources.
const (
	KeyCookie KeyKind = iota // the bluegreen_rollout cookie, set by the proxy when absent
	KeyHeader                // a request header; a request without it stays on the active colour
	KeyIP                    // the connection's peer address
)

// RolloutKey says how a client is recognised during a progressive rollout.
type RolloutKey struct {
	Kind   KeyKind
	Header string // the header's canonical name, for KeyHeader
}

// ParseRolloutKey reads "cookie", "header:NAME" or "ip".
func ParseRolloutKey(s string) (RolloutKey, error) {
	switch {
	case s == "cookie" || s == "":
		return RolloutKey{Kind: KeyCookie}, nil
	case s == "ip":
		return RolloutKey{Kind: KeyIP}, nil
	case strings.HasPrefix(s, "header:"):
		name := strings.TrimPrefix(s, "header:")
		if name == "" || strings.ContainsAny(name, " \t:\r\n") {
			return RolloutKey{}, fmt.Errorf("header name %q is not a valid header name", name)
		}
		return RolloutKey{Kind: KeyHeader, Header: http.CanonicalHeaderKey(name)}, nil
	}
	return RolloutKey{}, fmt.Errorf("%q: expected cookie, header:NAME or ip", s)
}

// String is the form ParseRolloutKey reads.
func (k RolloutKey) String() string {
	switch k.Kind {
	case KeyHeader:
		return "header:" + k.Header
	case KeyIP:
		return "ip"
	}
	return "cookie"
}

// bucketOf hashes a key to [0, weightScale): FNV-1a, then a 64-bit mixer so
// that keys differing in one character spread evenly. It allocates nothing.
func bucketOf[K ~string | ~[]byte](key K) uint32 {
	h := uint64(14695981039346656037)
	for i := 0; i < len(key); i++ {
		h ^= uint64(key[i])
		h *= 1099511628211
	}
	h ^= h >> 33
	h *= 0xff51afd7ed558ccd
	h ^= h >> 33
	h *= 0xc4ceb9fe1a85ec53
	h ^= h >> 33
	return uint32(h % weightScale)
}

// weightOf turns a percentage into the bucket bound of the snapshot.
func weightOf(percent int) uint32 {
	return uint32(min(max(percent, 0), 100)) * (weightScale / 100)
}

// onTarget is the rollout's routing decision: a client goes to the target
// when its key's bucket is below the weight. It is monotone: raising the
// weight only adds clients to the target, so no client goes back and forth.
func onTarget[K ~string | ~[]byte](key K, weight uint32) bool {
	return bucketOf(key) < weight
}

// newRolloutID returns a fresh random client id for the rollout cookie.
func newRolloutID() string {
	var b [12]byte
	_, _ = rand.Read(b[:]) // never fails (crypto/rand)
	return hex.EncodeToString(b[:])
}

// rolloutSetCookie is the Set-Cookie value that gives a client its id.
func rolloutSetCookie(id string) string {
	return RolloutCookie + "=" + id + "; Path=/; Max-Age=" + fmt.Sprint(rolloutCookieMaxAge) + "; HttpOnly; SameSite=Lax"
}

// rolloutRunning reports whether a progressive rollout sends clients to
// the idle colour; only then do the codecs look for the client's key.
func (rt *Router) rolloutRunning() bool { return rt.snap.Load().weight > 0 }

// bytesOf is a read-only view of s as bytes, for hashing without a copy.
func bytesOf(s string) []byte { return unsafe.Slice(unsafe.StringData(s), len(s)) }

// peerHost is the address without the port of a peer "host:port".
func peerHost(remote string) string {
	if host, _, err := net.SplitHostPort(remote); err == nil {
		return host
	}
	return remote
}

// rolloutKeyHTTP is the client's rollout key on the net/http codec (nil:
// none, the client stays on the active colour). With the cookie key and no
// cookie it gives the client a fresh id through a Set-Cookie on w, and
// routes it by that id.
func (rt *Router) rolloutKeyHTTP(w http.ResponseWriter, r *http.Request) []byte {
	switch rt.rolloutKey.Kind {
	case KeyHeader:
		return bytesOf(r.Header.Get(rt.rolloutKey.Header))
	case KeyIP:
		return bytesOf(peerHost(r.RemoteAddr))
	}
	if c, err := r.Cookie(RolloutCookie); err == nil && c.Value != "" {
		return bytesOf(c.Value)
	}
	id := newRolloutID()
	w.Header().Add("Set-Cookie", rolloutSetCookie(id))
	return bytesOf(id)
}

// rolloutKeyH1 is rolloutKeyHTTP on the fast codec. A client without its
// cookie was handed to net/http (see needsRolloutID); if it gets here
// anyway (the rollout began in between) it stays on the active colour.
func (rt *Router) rolloutKeyH1(h *h1.Head, remote string) []byte {
	switch rt.rolloutKey.Kind {
	case KeyHeader:
		v, _ := h.Field(rt.rolloutKeyLower)
		return v
	case KeyIP:
		return bytesOf(peerHost(remote))
	}
	v, _ := h.Cookie(RolloutCookie)
	return v
}

// needsRolloutID tells the fast codec to hand a request to net/http so the
// client gets a rollout cookie: a rollout runs, the key is the cookie, the
// client has none (or an empty one) and does not ask for the preview.
func (rt *Router) needsRolloutID(h *h1.Head) bool {
	if rt.rolloutKey.Kind != KeyCookie || !rt.rolloutRunning() {
		return false
	}
	if v, ok := h.Cookie(RolloutCookie); ok && len(v) > 0 {
		return false
	}
	return !(rt.previewable() && h.WantsPreview(rt.previewLower, rt.previewCookie))
}
