package admin

import (
	"encoding/json"
	"testing"

	"github.com/cryoprotect/bluegreen/state"
)

// FuzzParseSwitch feeds arbitrary bodies to the switch request parser: it
// never panics, and what it accepts respects the documented limits and
// survives a round trip through JSON.
func FuzzParseSwitch(f *testing.F) {
	for _, s := range []string{
		``, ` `, `{}`, `null`, `{"to":"green"}`, `{"to":"blue","force":true,"reason":"release 42"}`,
		`{"generation":7}`, `{"generation":-1}`, `{"generation":1e40}`, `{"trigger":"cli"}`, `{"trigger":"auto-rollback"}`,
		`{"to":"green"} {"to":"blue"}`, `{"to":"green"}x`, `{"unknown":1}`, `[1,2]`, `"green"`, `{"to":`,
		`{"reason":"\u0000\ud800"}`, `{"to":"green","to":"blue"}`, "\xef\xbb\xbf{}",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		req, err := parseSwitch(body)
		if err != nil {
			return
		}
		if len(req.Reason) > maxReason {
			t.Fatalf("accepted a reason of %d bytes", len(req.Reason))
		}
		switch req.Trigger {
		case "", state.TriggerAPI, state.TriggerCLI:
		default:
			t.Fatalf("accepted trigger %q", req.Trigger)
		}
		b, err := json.Marshal(req)
		if err != nil {
			t.Fatalf("accepted request does not marshal: %v", err)
		}
		if _, err := parseSwitch(b); err != nil {
			t.Fatalf("accepted %q, refused its re-encoding %s: %v", body, b, err)
		}
	})
}
