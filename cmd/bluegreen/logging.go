package main

import (
	"fmt"
	"io"
	stdlog "log"
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/cryoprotect/bluegreen/internal/loglimit"
	"github.com/lmittmann/tint"
)

func parseLevel(s string) (slog.Level, error) {
	switch strings.ToLower(s) {
	case "debug":
		return slog.LevelDebug, nil
	case "info", "":
		return slog.LevelInfo, nil
	case "warn", "warning":
		return slog.LevelWarn, nil
	case "error":
		return slog.LevelError, nil
	}
	return 0, fmt.Errorf("unknown log level %q", s)
}

// newLogger returns the process logger: tint on a terminal, JSON otherwise
// (format "auto"), or what format names ("json", "text", or "ecs": JSON with
// Elastic Common Schema field names, see logging_ecs.go).
func newLogger(w io.Writer, format, level string) *slog.Logger {
	lvl, err := parseLevel(level)
	if err != nil {
		lvl = slog.LevelInfo
	}
	if format == "auto" {
		format = "json"
		if isTerminal(w) {
			format = "text"
		}
	}
	if format == "ecs" {
		return slog.New(newECSHandler(w, lvl, "bluegreen"))
	}
	if format == "text" {
		return slog.New(tint.NewHandler(w, &tint.Options{Level: lvl, TimeFormat: "15:04:05.000", NoColor: !isTerminal(w)}))
	}
	return slog.New(slog.NewJSONHandler(w, &slog.HandlerOptions{Level: lvl}))
}

func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}

// routeStdLog sends what Go's libraries write to the log package's
// standard logger through l, as warnings, a line a second at most (with
// the count of those held back), until restore is called. The only such
// line in practice is net/http's Transport noticing bytes an instance sent
// after its answer, on an idle connection ("Unsolicited response received
// on idle HTTP channel"): a bare, time-stamped line among the JSON a log
// shipper parses, and one per request from an instance that always does
// it. The standard logger belongs to the process, so only the process's
// own entry points (serve, demo) route it; tests of serve keep theirs.
func routeStdLog(l *slog.Logger, now func() time.Time) (restore func()) {
	out, flags, prefix := stdlog.Writer(), stdlog.Flags(), stdlog.Prefix()
	stdlog.SetOutput(&stdLogLines{l: l, limit: loglimit.Limit{Every: time.Second, Now: now}})
	stdlog.SetFlags(0)
	stdlog.SetPrefix("")
	return func() {
		stdlog.SetOutput(out)
		stdlog.SetFlags(flags)
		stdlog.SetPrefix(prefix)
	}
}

// stdLogLines is the standard logger's output: the log package writes
// each line with one call.
type stdLogLines struct {
	l     *slog.Logger
	limit loglimit.Limit
}

func (s *stdLogLines) Write(p []byte) (int, error) {
	if ok, held := s.limit.Allow(); ok {
		s.l.Warn(strings.TrimRight(string(p), "\n"), "component", "go", "held_back", held)
	}
	return len(p), nil
}
