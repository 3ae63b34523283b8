package h1

import (
	"bytes"
	"errors"
)

// The fast path parses HTTP/1.1 heads itself, strictly: anything it does not
// fully understand is not guessed at but handed to net/http, whose parser
// then decides (and answers 400, 431 and so on). The one thing it refuses
// itself is a request with both Content-Length and Transfer-Encoding, which
// net/http would accept after dropping the Content-Length.

// fieldID names the header fields the fast path acts on.
type fieldID uint8

const (
	fOther fieldID = iota
	fHost
	fContentLength
	fTransferEncoding
	fConnection
	fUpgrade
	fExpect
	fTE
	fKeepAlive
	fProxyConnection
	fProxyAuthenticate
	fProxyAuthorization
	fTrailer
	fXForwardedFor
	fXForwardedHost
	fXForwardedProto
	fXForwardedOther
	fForwarded
	fXRealIP
	fCookie
	fContentType
	fDate
	fAlias // ForwardingAlias: never passed on
)

type field struct {
	name, value []byte
	id          fieldID
}

const maxFields = 100

// head is one parsed request or response head. Its slices point into the
// read buffer and are valid until that buffer is consumed.
type Head struct {
	headState
	fields     []field
	arr        [maxFields]field
	connTokens [8][]byte // other Connection tokens (responses), the first nConnTokens
}

// headState is what reset clears of a Head: all of it but the arrays,
// whose entries past the counts are never read (clearing them cost more
// than the rest of a parse).
type headState struct {
	// request line
	method string // one of the fast path's methods (a constant)
	target []byte
	// status line
	code   int
	reason []byte
	http10 bool

	end int // length of the head including the blank line

	contentLength int64 // -1: none
	nCL           int
	chunked       bool
	te            int // Transfer-Encoding fields
	closeConn     bool
	nConnTokens   int
	hosts         int
	userinfo      bool // a Host with '@'
	emptyHost     bool // a Host without a value
	sse           bool
	hasDate       bool
	upgrade       bool   // an Upgrade field
	expects       int    // Expect fields
	continue100   bool   // the (last) Expect field is 100-continue
	keepAlive     []byte // the (last) Keep-Alive field's value (IdleLimit)

	// The last Cookie lookup, so the codec's hand-off check and the
	// rollout key read the client's cookie once per request.
	cookieName string
	cookieVal  []byte
	cookieOK   bool
}

// verdicts of parseRequest besides ok.
var (
	errFallback = errors.New("fast path: not a plain request")
	errCLTE     = errors.New("both Content-Length and Transfer-Encoding")
	errUserinfo = errors.New("a Host with userinfo")
)

// findHeadEnd returns the length of the head at the start of b including the
// blank line, 0 when it is not complete yet, or -1 when a line ends in a bare
// LF (net/http decides about those).
func FindHeadEnd(b []byte) int {
	i := 0
	for {
		j := bytes.IndexByte(b[i:], '\n')
		if j < 0 {
			return 0
		}
		j += i
		if j == 0 || b[j-1] != '\r' {
			return -1
		}
		if j == i+1 && i > 0 { // an empty line: "\r\n" right after the previous "\n"
			return j + 1
		}
		i = j + 1
	}
}

var fastMethods = [...]string{"GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"}

// parseRequest parses the complete head b (as found by findHeadEnd).
// errFallback: let net/http serve the connection; errCLTE: refuse with 400.
func (h *Head) ParseRequest(b []byte) error {
	h.reset(len(b))
	line, rest := cutLine(b)
	sp := bytes.IndexByte(line, ' ')
	if sp <= 0 {
		return errFallback
	}
	m := line[:sp]
	h.method = ""
	for _, fm := range fastMethods {
		if string(m) == fm {
			h.method = fm
			break
		}
	}
	if h.method == "" {
		return errFallback
	}
	line = line[sp+1:]
	sp = bytes.IndexByte(line, ' ')
	if sp <= 0 || line[0] != '/' || string(line[sp+1:]) != "HTTP/1.1" {
		return errFallback
	}
	h.target = line[:sp]
	query := false
	for i, c := range h.target {
		if c <= ' ' || c >= 0x7f || c == '#' {
			return errFallback
		}
		// net/http's reverse proxy drops query parameters it cannot parse
		// (a ';' or a bad escape), so proxy and instance never read the
		// query differently; those requests go there.
		query = query || c == '?'
		if query && c == ';' {
			return errFallback
		}
		// A '%' must start an escape (net/http answers 400 in the path).
		if c == '%' && (i+2 >= len(h.target) || !isHex(h.target[i+1]) || !isHex(h.target[i+2])) {
			return errFallback
		}
	}
	if !h.parseFields(rest) {
		return errFallback
	}
	if h.te > 0 && h.nCL > 0 {
		return errCLTE
	}
	if h.userinfo {
		return errUserinfo // RFC 9112 3.2
	}
	// Upgrades (WebSocket), expectations other than one Expect:
	// 100-continue (it answers 417) and chunked bodies are net/http's; so
	// are duplicate Content-Length fields (it drops the copies), a missing
	// or repeated Host (it answers 400), an empty Host (its client sends
	// the instance's address instead, as for a request without one: the
	// fast codec would pass it empty), and a Connection field naming
	// other fields (it drops them without letting that touch the framing).
	if h.te > 0 || h.nCL > 1 || h.hosts != 1 || h.emptyHost || h.upgrade || h.expects > 1 || h.expects == 1 && !h.continue100 || h.nConnTokens > 0 {
		return errFallback
	}
	return nil
}

// parseResponse parses a complete response head.
func (h *Head) ParseResponse(b []byte) error {
	h.reset(len(b))
	line, rest := cutLine(b)
	switch {
	case bytes.HasPrefix(line, []byte("HTTP/1.1 ")):
	case bytes.HasPrefix(line, []byte("HTTP/1.0 ")):
		h.http10 = true
	default:
		return errors.New("malformed status line")
	}
	line = line[9:]
	if len(line) < 3 || (len(line) > 3 && line[3] != ' ') {
		return errors.New("malformed status line")
	}
	code := 0
	for _, c := range line[:3] {
		if c < '0' || c > '9' {
			return errors.New("malformed status code")
		}
		code = code*10 + int(c-'0')
	}
	if code < 100 {
		return errors.New("malformed status code")
	}
	h.code = code
	if len(line) > 3 {
		h.reason = line[4:]
	}
	for _, c := range h.reason {
		if c < ' ' && c != '\t' || c == 0x7f {
			return errors.New("malformed reason phrase")
		}
	}
	if !h.parseFields(rest) {
		return errors.New("malformed header field")
	}
	if h.te > 1 {
		return errors.New("more than one Transfer-Encoding")
	}
	if h.te == 1 && !h.chunked {
		return errors.New("unsupported Transfer-Encoding")
	}
	return nil
}

func (h *Head) reset(end int) {
	h.headState = headState{end: end, contentLength: -1}
	h.fields = h.arr[:0]
}

func cutLine(b []byte) (line, rest []byte) {
	i := bytes.IndexByte(b, '\n') // present: findHeadEnd checked every line
	return b[:i-1], b[i+1:]
}

// splitField splits a field line (without its CRLF) into its name, a run
// of token characters, and its value without the whitespace around it;
// false when it is no field line: no name, no colon right after it (which
// also refuses a leading space, obsolete line folding), or a control byte
// other than tab in the value.
func splitField(line []byte) (name, value []byte, ok bool) {
	colon := 0
	for colon < len(line) && byteClass[line[colon]]&classToken != 0 {
		colon++
	}
	if colon == 0 || colon == len(line) || line[colon] != ':' {
		return nil, nil, false
	}
	v := line[colon+1:]
	for len(v) > 0 && (v[0] == ' ' || v[0] == '\t') {
		v = v[1:]
	}
	for len(v) > 0 && (v[len(v)-1] == ' ' || v[len(v)-1] == '\t') {
		v = v[:len(v)-1]
	}
	for _, c := range v {
		if byteClass[c]&classCtl != 0 {
			return nil, nil, false
		}
	}
	return line[:colon], v, true
}

// parseFields parses the field lines up to the blank line.
func (h *Head) parseFields(b []byte) bool {
	for {
		line, rest := cutLine(b)
		b = rest
		if len(line) == 0 {
			return true
		}
		name, v, ok := splitField(line)
		if !ok || len(h.fields) == maxFields {
			return false
		}
		id := classifyField(name)
		switch id {
		case fHost:
			h.hosts++
			if !validHost(v) {
				return false // net/http answers 400
			}
			h.userinfo = h.userinfo || bytes.IndexByte(v, '@') >= 0
			h.emptyHost = h.emptyHost || len(v) == 0
		case fContentLength:
			n, ok := parseDecimal(v)
			if !ok || (h.nCL > 0 && n != h.contentLength) {
				return false
			}
			h.contentLength = n
			h.nCL++
		case fTransferEncoding:
			h.te++
			h.chunked = equalFold(v, "chunked")
		case fConnection:
			if !h.connection(v) {
				return false
			}
		case fContentType:
			h.sse = len(v) >= 17 && equalFold(v[:17], "text/event-stream")
		case fDate:
			h.hasDate = true
		case fKeepAlive:
			h.keepAlive = v
		case fUpgrade:
			h.upgrade = true
		case fExpect:
			h.expects++
			h.continue100 = equalFold(v, "100-continue")
		}
		h.fields = append(h.fields, field{name: name, value: v, id: id})
	}
}

// connection records the tokens of a Connection field.
func (h *Head) connection(v []byte) bool {
	for len(v) > 0 {
		var tok []byte
		if i := bytes.IndexByte(v, ','); i >= 0 {
			tok, v = v[:i], v[i+1:]
		} else {
			tok, v = v, nil
		}
		tok = bytes.Trim(tok, " \t")
		switch {
		case len(tok) == 0:
		case equalFold(tok, "close"):
			h.closeConn = true
		case equalFold(tok, "keep-alive"):
		default:
			if h.nConnTokens == len(h.connTokens) {
				return false
			}
			h.connTokens[h.nConnTokens] = tok
			h.nConnTokens++
		}
	}
	return true
}

// connectionNamed reports whether the Connection field listed name.
func (h *Head) connectionNamed(name []byte) bool {
	for _, t := range h.connTokens[:h.nConnTokens] {
		if bytes.EqualFold(t, name) {
			return true
		}
	}
	return false
}

func parseDecimal(v []byte) (int64, bool) {
	if len(v) == 0 || len(v) > 18 {
		return 0, false
	}
	var n int64
	for _, c := range v {
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + int64(c-'0')
	}
	return n, true
}

// parseHex parses a chunk-size line (without its CRLF): hex digits and
// optional extensions after ';'.
func parseChunkSize(line []byte) (int64, bool) {
	if i := bytes.IndexByte(line, ';'); i >= 0 {
		line = line[:i]
	}
	line = bytes.TrimRight(line, " \t")
	if len(line) == 0 || len(line) > 15 {
		return 0, false
	}
	var n int64
	for _, c := range line {
		var d byte
		switch {
		case c >= '0' && c <= '9':
			d = c - '0'
		case c >= 'a' && c <= 'f':
			d = c - 'a' + 10
		case c >= 'A' && c <= 'F':
			d = c - 'A' + 10
		default:
			return 0, false
		}
		n = n<<4 | int64(d)
	}
	return n, true
}

func classifyField(n []byte) fieldID {
	switch len(n) {
	case 2:
		if equalFold(n, "te") {
			return fTE
		}
	case 4:
		if equalFold(n, "host") {
			return fHost
		}
		if equalFold(n, "date") {
			return fDate
		}
	case 6:
		if equalFold(n, "expect") {
			return fExpect
		}
		if equalFold(n, "cookie") {
			return fCookie
		}
	case 7:
		if equalFold(n, "upgrade") {
			return fUpgrade
		}
		if equalFold(n, "trailer") {
			return fTrailer
		}
	case 9:
		if equalFold(n, "forwarded") {
			return fForwarded
		}
		if equalFold(n, "x-real-ip") {
			return fXRealIP
		}
	case 10:
		if equalFold(n, "connection") {
			return fConnection
		}
		if equalFold(n, "keep-alive") {
			return fKeepAlive
		}
	case 12:
		if equalFold(n, "content-type") {
			return fContentType
		}
	case 14:
		if equalFold(n, "content-length") {
			return fContentLength
		}
	case 15:
		if equalFold(n, "x-forwarded-for") {
			return fXForwardedFor
		}
	case 16:
		if equalFold(n, "x-forwarded-host") {
			return fXForwardedHost
		}
		if equalFold(n, "proxy-connection") {
			return fProxyConnection
		}
	case 17:
		if equalFold(n, "transfer-encoding") {
			return fTransferEncoding
		}
		if equalFold(n, "x-forwarded-proto") {
			return fXForwardedProto
		}
	case 18:
		if equalFold(n, "proxy-authenticate") {
			return fProxyAuthenticate
		}
	case 19:
		if equalFold(n, "proxy-authorization") {
			return fProxyAuthorization
		}
	}
	if len(n) > 12 && equalFold(n[:12], "x-forwarded-") {
		return fXForwardedOther
	}
	if ForwardingAlias(n) {
		return fAlias
	}
	return fOther
}

// ForwardingAlias reports a field name with an underscore that reads as
// X-Forwarded-* or X-Real-IP when its underscores are hyphens
// ("X_Forwarded_For"). The proxy sets those fields, or passes them on from
// trusted proxies only; apps behind a CGI-style interface (WSGI, Rack,
// PHP) see both spellings as one variable (HTTP_X_FORWARDED_FOR), so the
// client's alias would stand for the proxy's field. Every codec drops
// them, from any peer (nginx drops every name with an underscore; this
// drops those that can forge a field the proxy vouches for).
func ForwardingAlias[T ~string | ~[]byte](n T) bool {
	if len(n) < 9 || n[0]|0x20 != 'x' || n[1] != '_' && n[1] != '-' {
		return false
	}
	var b [12]byte // X-Forwarded- or X-Real-IP: the part an underscore can stand in
	under := false
	for i := range copy(b[:], n) {
		if b[i] == '_' {
			b[i], under = '-', true
		}
	}
	return under && (len(n) > 12 && equalFold(b[:], "x-forwarded-") || len(n) == 9 && equalFold(b[:9], "x-real-ip"))
}

// equalFold compares ASCII case-insensitively; s is lower case.
func equalFold(b []byte, s string) bool {
	if len(b) != len(s) {
		return false
	}
	for i := range len(b) {
		c := b[i]
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		if c != s[i] {
			return false
		}
	}
	return true
}

// byteClass classifies bytes for the field-line loops: a read-only table,
// filled once from isTokenChar and the control characters.
var byteClass = func() (t [256]uint8) {
	for i := range t {
		c := byte(i)
		if isTokenChar(c) {
			t[i] |= classToken
		}
		if c < ' ' && c != '\t' || c == 0x7f {
			t[i] |= classCtl
		}
	}
	return t
}()

const (
	classToken = 1 << iota // RFC 9110 tchar
	classCtl               // a control character other than HTAB: not in a field value
)

// isTokenChar reports RFC 9110 tchar.
func isTokenChar(c byte) bool {
	switch {
	case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		return true
	}
	switch c {
	case '!', '#', '$', '%', '&', '\'', '*', '+', '-', '.', '^', '_', '`', '|', '~':
		return true
	}
	return false
}

// validHost reports whether a Host value has only the bytes net/http
// accepts in one (letters, digits and "!$%&'()*+,-.:;=@[]_~").
func validHost(v []byte) bool {
	for _, c := range v {
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
			continue
		}
		switch c {
		case '!', '$', '%', '&', '\'', '(', ')', '*', '+', ',', '-', '.', ':', ';', '=', '@', '[', ']', '_', '~':
			continue
		}
		return false
	}
	return true
}

func isHex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

// Method is the request's method, one of the codec's (a constant).
func (h *Head) Method() string { return h.method }

// ContentLength is the request's body length; -1: none.
func (h *Head) ContentLength() int64 { return h.contentLength }

// pathOf is the path of an origin-form target.
func pathOf(target []byte) []byte {
	if i := bytes.IndexByte(target, '?'); i >= 0 {
		return target[:i]
	}
	return target
}

// WantsPreview reports whether the request asks for the idle colour with
// the preview field (lower-case name headerLower) or cookie, read as
// net/http reads them: the first preview field decides, and the first
// cookie of that name. Empty names are not looked for.
func (h *Head) WantsPreview(headerLower, cookie string) bool {
	headerSeen, cookieSeen := headerLower == "", cookie == ""
	for i := range h.fields {
		f := &h.fields[i]
		switch {
		case !headerSeen && f.id == fOther && equalFold(f.name, headerLower):
			headerSeen = true
			if truthyBytes(f.value) {
				return true
			}
		case !cookieSeen && f.id == fCookie:
			if val, ok := cookieValue(f.value, cookie); ok {
				cookieSeen = true
				if truthyBytes(val) {
					return true
				}
			}
		}
		if headerSeen && cookieSeen {
			return false
		}
	}
	return false
}

func truthyBytes(v []byte) bool { return string(v) == "1" || equalFold(v, "true") }

// trimSpaceTab is bytes.Trim(b, " \t") without building a cut set per call.
func trimSpaceTab(b []byte) []byte {
	for len(b) > 0 && (b[0] == ' ' || b[0] == '\t') {
		b = b[1:]
	}
	for len(b) > 0 && (b[len(b)-1] == ' ' || b[len(b)-1] == '\t') {
		b = b[:len(b)-1]
	}
	return b
}

// cookieValue finds the first cookie called name in the Cookie field value
// v, read exactly as net/http reads it: parts and names trimmed, a part
// without '=' is a cookie with an empty value, a quoted value is unquoted,
// and a value with a byte a cookie cannot hold is skipped.
func cookieValue(v []byte, name string) ([]byte, bool) {
	for len(v) > 0 {
		var part []byte
		if i := bytes.IndexByte(v, ';'); i >= 0 {
			part, v = v[:i], v[i+1:]
		} else {
			part, v = v, nil
		}
		part = trimSpaceTab(part)
		if len(part) == 0 {
			continue
		}
		n, val := part, []byte(nil)
		if eq := bytes.IndexByte(part, '='); eq >= 0 {
			n, val = part[:eq], part[eq+1:]
		}
		if string(trimSpaceTab(n)) != name {
			continue
		}
		if len(val) > 1 && val[0] == '"' && val[len(val)-1] == '"' {
			val = val[1 : len(val)-1]
		}
		ok := true
		for _, c := range val {
			if c < 0x20 || c >= 0x7f || c == '"' || c == ';' || c == '\\' {
				ok = false
				break
			}
		}
		if ok {
			return val, true
		}
	}
	return nil, false
}
