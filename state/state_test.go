package state

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
	"time"
)

var t0 = time.Date(2025, 3, 14, 15, 9, 26, 535897932, time.UTC)

// sample returns a valid state of generation gen with gen-1 history events.
func sample(gen uint64) State {
	colours := [2]string{"blue", "green"}
	s := State{
		Active:     colours[gen%2],
		Generation: gen,
		ChangedAt:  t0.Add(time.Duration(gen) * time.Minute),
	}
	if gen > 1 {
		s.Previous = colours[(gen+1)%2]
	}
	for g := uint64(2); g <= gen; g++ {
		s.History = append(s.History, Event{
			Time:       t0.Add(time.Duration(g) * time.Minute),
			Action:     ActionCutover,
			From:       colours[(g+1)%2],
			To:         colours[g%2],
			Trigger:    TriggerAPI,
			Reason:     "release " + strings.Repeat("x", int(g)),
			Generation: g,
		})
	}
	return s
}

// equalState compares states field by field, times with time.Equal.
func equalState(a, b State) bool {
	if a.Active != b.Active || a.Previous != b.Previous || a.Generation != b.Generation ||
		!a.ChangedAt.Equal(b.ChangedAt) || len(a.History) != len(b.History) {
		return false
	}
	for i := range a.History {
		x, y := a.History[i], b.History[i]
		if !x.Time.Equal(y.Time) || x.Action != y.Action || x.From != y.From || x.To != y.To ||
			x.Trigger != y.Trigger || x.Reason != y.Reason || x.Generation != y.Generation {
			return false
		}
	}
	return true
}

func mustEncode(t testing.TB, s State) []byte {
	t.Helper()
	data, err := Encode(s)
	if err != nil {
		t.Fatalf("Encode: %v", err)
	}
	return data
}

func TestEncodeDecodeRoundTrip(t *testing.T) {
	withZone := sample(3)
	withZone.ChangedAt = withZone.ChangedAt.In(time.FixedZone("CET", 3600))
	withRollback := sample(2)
	withRollback.History = append(withRollback.History, Event{
		Time: t0.Add(time.Hour), Action: ActionRollback, From: "blue", To: "green",
		Trigger: TriggerAutoRollback, Generation: 3,
	})
	withRollback.Generation = 3
	withRollback.Active, withRollback.Previous = "green", "blue"

	tests := []struct {
		name string
		in   State
	}{
		{"first state, no history", sample(1)},
		{"history", sample(4)},
		{"rollback without reason", withRollback},
		{"non-UTC time", withZone},
		{"empty non-nil history", State{Active: "blue", Generation: 7, History: []Event{}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			data := mustEncode(t, tt.in)
			var top map[string]json.RawMessage
			if err := json.Unmarshal(data, &top); err != nil {
				t.Fatalf("Encode output is not a JSON object: %v\n%s", err, data)
			}
			if got := string(top["format"]); got != "1" {
				t.Errorf(`"format" = %q, want 1`, got)
			}
			if got := string(top["history"]); !strings.HasPrefix(got, "[") {
				t.Errorf(`"history" = %q, want a list`, got)
			}
			if !bytes.Contains(data, []byte("\n  \"active\"")) {
				t.Errorf("Encode output is not indented:\n%s", data)
			}
			got, err := Decode(data)
			if err != nil {
				t.Fatalf("Decode: %v\n%s", err, data)
			}
			if !equalState(got, tt.in) {
				t.Errorf("round trip:\n got %+v\nwant %+v", got, tt.in)
			}
		})
	}
}

func TestEncodeRejectsInvalid(t *testing.T) {
	tests := []struct {
		name string
		in   State
		want string
	}{
		{"empty active", State{Generation: 1}, "active colour is empty"},
		{"generation 0", State{Active: "blue"}, "generation is 0"},
		{"time out of range", State{Active: "blue", Generation: 1, ChangedAt: time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC)}, "encode"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Encode(tt.in)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Encode error = %v, want one containing %q", err, tt.want)
			}
		})
	}
}

func TestDecodeErrors(t *testing.T) {
	valid := string(mustEncode(t, sample(2)))
	tests := []struct {
		name string
		in   string
		want string // substring of the error
	}{
		{"nil", "", "no data"},
		{"whitespace", " \n\t", "no data"},
		{"garbage", "\x00\xffnot json", "invalid character"},
		{"truncated", valid[:len(valid)/2], "truncated"},
		{"truncated after object start", "{", "truncated"},
		{"format 99", `{"format": 99, "active": "blue", "generation": 1}`, "unsupported format version 99"},
		{"format missing", `{"active": "blue", "generation": 1}`, `missing "format"`},
		{"format wrong type", `{"format": "1", "active": "blue", "generation": 1}`, "format"},
		{"generation 0", `{"format": 1, "active": "blue", "generation": 0}`, "generation is 0"},
		{"generation missing", `{"format": 1, "active": "blue"}`, "generation is 0"},
		{"generation negative", `{"format": 1, "active": "blue", "generation": -1}`, "generation"},
		{"empty active", `{"format": 1, "active": "", "generation": 3}`, "active colour is empty"},
		{"unknown field", `{"format": 1, "active": "blue", "generation": 1, "colour": "x"}`, "unknown field"},
		{"trailing object", valid + `{}`, "trailing data"},
		{"trailing garbage", valid + "x", "trailing data"},
		{"two states", valid + valid, "trailing data"},
		{"null", "null", `missing "format"`},
		{"array", "[]", "cannot unmarshal"},
		{"bad time", `{"format": 1, "active": "blue", "generation": 1, "changed_at": "yesterday"}`, "yesterday"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Decode([]byte(tt.in))
			if err == nil {
				t.Fatalf("Decode succeeded with %+v, want error containing %q", got, tt.want)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("Decode error = %q, want it to contain %q", err, tt.want)
			}
			if !strings.HasPrefix(err.Error(), "state: decode: ") {
				t.Errorf("Decode error = %q, want prefix %q", err, "state: decode: ")
			}
		})
	}
}

func TestDecodeAcceptsTrailingWhitespace(t *testing.T) {
	data := append(mustEncode(t, sample(2)), " \n\n\t"...)
	if _, err := Decode(data); err != nil {
		t.Fatalf("Decode: %v", err)
	}
}

// FuzzDecode checks that Decode never panics and that whatever it accepts
// survives Encode and Decode again unchanged.
func FuzzDecode(f *testing.F) {
	valid := mustEncode(f, sample(3))
	f.Add(valid)
	f.Add(mustEncode(f, sample(1)))
	f.Add(valid[:len(valid)/2])
	f.Add(valid[:len(valid)-3])
	f.Add([]byte("garbage"))
	f.Add([]byte(""))
	f.Add([]byte("null"))
	f.Add([]byte(`{"format":99,"active":"blue","generation":1}`))
	f.Add([]byte(`{"format":1,"active":"blue","generation":0}`))
	f.Add([]byte(`{"format":1,"active":"b","generation":18446744073709551615,"changed_at":"2024-02-29T23:59:59.999999999-07:30","history":null}`))
	f.Add([]byte(`{"format":1,"active":"\ud800","generation":1,"history":[{"time":"0001-01-01T00:00:00Z","reason":"\u0000"}]}`))
	f.Add(append(valid, valid...))

	f.Fuzz(func(t *testing.T, data []byte) {
		s, err := Decode(data)
		if err != nil {
			return
		}
		enc, err := Encode(s)
		if err != nil {
			t.Fatalf("Decode accepted a state Encode rejects: %v\nstate %+v", err, s)
		}
		s2, err := Decode(enc)
		if err != nil {
			t.Fatalf("Decode(Encode(s)): %v\n%s", err, enc)
		}
		if !equalState(s, s2) {
			t.Fatalf("round trip changed the state:\n got %+v\nwant %+v", s2, s)
		}
		if enc2 := mustEncode(t, s2); !bytes.Equal(enc, enc2) {
			t.Fatalf("Encode is not stable:\n%s\n%s", enc, enc2)
		}
	})
}
