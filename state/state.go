// Package state holds the durable routing decision: which colour is active,
// which was active before it, and the history of switches between them.
//
// A [Store] keeps one [State] and changes it only by compare-and-swap on the
// state's generation, so two writers can never both believe they switched.
// [FileStore] keeps the state in one JSON file on local disk and replaces it
// atomically (temp file, fsync, rename, directory fsync), so a crash never
// leaves a torn file. Stores for a fleet of proxies live in sub-packages and
// are plugged in by the caller through [Open]'s [ErrUnsupportedScheme].
package state

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"time"
)

// Actions recorded in [Event.Action].
const (
	ActionCutover  = "cutover"
	ActionRollback = "rollback"
	// ActionAbort ends a progressive rollout: the target's weight goes back
	// to 0 at once; the active colour does not change.
	ActionAbort = "abort"
)

// Triggers recorded in [Event.Trigger].
const (
	TriggerAPI          = "api"
	TriggerCLI          = "cli"
	TriggerAutoRollback = "auto-rollback"
	// TriggerRollout is the cutover that ends a rollout's last step.
	TriggerRollout = "rollout"
	// TriggerSLOAbort is a rollout aborted by its own analysis.
	TriggerSLOAbort = "slo-abort"
)

// FormatVersion is the value of the top-level "format" field written by
// [Encode]. [Decode] rejects any other value.
const FormatVersion = 1

// Event is one switch of the active colour.
type Event struct {
	Time       time.Time `json:"time"`
	Action     string    `json:"action"`  // "cutover" or "rollback"
	From       string    `json:"from"`    // colour active before the switch
	To         string    `json:"to"`      // colour active after the switch
	Trigger    string    `json:"trigger"` // "api", "cli" or "auto-rollback"
	Reason     string    `json:"reason,omitempty"`
	Generation uint64    `json:"generation"`       // generation of the state the switch produced
	Forced     bool      `json:"forced,omitempty"` // the target's health was not checked
}

// State is the durable routing decision.
//
// A State is a plain value, but its History slice is shared by copies: a
// Store does not keep the slice passed to CompareAndSwap, and callers that
// share a State between goroutines must not modify its History.
type State struct {
	// Active is the colour that receives production traffic. Never empty in
	// a stored state.
	Active string `json:"active"`
	// Previous is the colour that was active before Active, if any.
	Previous string `json:"previous,omitempty"`
	// Generation increases with every stored change; it is at least 1 in a
	// stored state and is the token for [Store.CompareAndSwap].
	Generation uint64 `json:"generation"`
	// ChangedAt is when Active last changed.
	ChangedAt time.Time `json:"changed_at"`
	// History lists the switches, oldest first.
	History []Event `json:"history"`
	// Rollout is the progressive rollout in progress, if any: a share of
	// the clients goes to the idle colour Rollout.To. Absent in states
	// written before rollouts existed.
	Rollout *Rollout `json:"rollout,omitempty"`
	// LastRollout is the rollout that ended last, with its outcome.
	LastRollout *Rollout `json:"last_rollout,omitempty"`
}

// ErrNotFound reports that a store holds no state yet.
var ErrNotFound = errors.New("state: not found")

// ErrConflict reports that a compare-and-swap lost: the stored generation was
// not the one expected.
var ErrConflict = errors.New("state: generation conflict")

// ErrClosed reports an operation on a store after Close.
var ErrClosed = errors.New("state: store closed")

// Store keeps one State. Implementations are safe for concurrent use by
// multiple goroutines.
type Store interface {
	// Load returns the stored state, or an error wrapping ErrNotFound when
	// the store is empty. Any other error means the stored state could not be
	// read or is invalid; callers must not treat it as "empty".
	Load(ctx context.Context) (State, error)

	// CompareAndSwap stores next only if the stored generation equals expect
	// (expect 0 means "the store must be empty"), and returns an error
	// wrapping ErrConflict otherwise. next.Generation must be greater than
	// expect. On any error the stored state is unchanged.
	CompareAndSwap(ctx context.Context, expect uint64, next State) error

	// Watch delivers the states stored after the call, in generation order,
	// with latest-value semantics: a slow reader may miss intermediate
	// states but always receives the newest. The channel is closed when ctx
	// ends or the store is closed.
	Watch(ctx context.Context) <-chan State

	// Close releases the store and closes every Watch channel. Calls after
	// the first return nil.
	Close() error
}

// fileFormat is the on-disk and wire layout: State with a format version in
// front of it.
type fileFormat struct {
	Format int `json:"format"`
	State
}

// validate reports why s cannot be stored, or nil.
func validate(s State) error {
	if s.Active == "" {
		return errors.New("active colour is empty")
	}
	if s.Generation == 0 {
		return errors.New("generation is 0")
	}
	if r := s.Rollout; r != nil {
		switch {
		case r.To == "" || r.To == s.Active:
			return fmt.Errorf("rollout target %q must be the colour that is not active", r.To)
		case r.Step < 0 || r.Step >= len(r.Steps):
			return fmt.Errorf("rollout step %d is not an index into its %d steps", r.Step, len(r.Steps))
		case r.Weight < 0 || r.Weight > 100:
			return fmt.Errorf("rollout weight %d is not a percentage", r.Weight)
		}
	}
	return nil
}

// Encode returns s as indented JSON with a top-level "format" field set to
// FormatVersion. It fails if s could not be decoded again: an empty Active, a
// zero Generation, or a time JSON cannot represent. A nil History is written
// as an empty list.
func Encode(s State) ([]byte, error) {
	if err := validate(s); err != nil {
		return nil, fmt.Errorf("state: encode: %w", err)
	}
	if s.History == nil {
		s.History = []Event{}
	}
	data, err := json.MarshalIndent(fileFormat{Format: FormatVersion, State: s}, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("state: encode: %w", err)
	}
	return append(data, '\n'), nil
}

// Decode parses data written by Encode. It is strict: malformed JSON,
// unknown fields, trailing data after the object, a missing or unknown format
// version, an empty active colour and a zero generation are all errors that
// say what is wrong. An empty History decodes as nil. Decode never panics.
func Decode(data []byte) (State, error) {
	if len(bytes.TrimSpace(data)) == 0 {
		return State{}, errors.New("state: decode: no data")
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	var f fileFormat
	if err := dec.Decode(&f); err != nil {
		if errors.Is(err, io.ErrUnexpectedEOF) {
			return State{}, errors.New("state: decode: truncated JSON")
		}
		return State{}, fmt.Errorf("state: decode: %w", err)
	}
	if tok, err := dec.Token(); err != io.EOF {
		if err != nil {
			return State{}, fmt.Errorf("state: decode: trailing data after the state object: %w", err)
		}
		return State{}, fmt.Errorf("state: decode: trailing data after the state object: %v", tok)
	}
	switch f.Format {
	case FormatVersion:
	case 0:
		return State{}, errors.New(`state: decode: missing "format" field`)
	default:
		return State{}, fmt.Errorf("state: decode: unsupported format version %d (this build reads %d)", f.Format, FormatVersion)
	}
	if err := validate(f.State); err != nil {
		return State{}, fmt.Errorf("state: decode: %w", err)
	}
	if len(f.History) == 0 {
		f.History = nil
	}
	return f.State, nil
}
