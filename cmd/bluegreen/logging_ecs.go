package main

import (
	"context"
	"io"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"time"
)

// ECS (Elastic Common Schema) log format, BLUEGREEN_LOG_FORMAT=ecs.
//
// The packages log with short attribute names ("color", "status", ...). The
// ecsHandler renames them to ECS fields on the way out, so that Elasticsearch,
// Logstash, VictoriaLogs or any other store reads the records without parsing
// rules, and the code that logs stays unaware of the schema. Names it does
// not know go under the custom namespace "bluegreen." with their type kept.
//
// One record is one JSON object with dotted keys (Elasticsearch expands them
// into objects; VictoriaLogs keeps them as they are):
//
//	{"@timestamp":"…","log.level":"info","message":"request","ecs.version":"8.11.0",
//	 "service.name":"bluegreen","log.logger":"access","event.dataset":"bluegreen.access",
//	 "http.request.method":"GET","url.path":"/","http.response.status_code":200,
//	 "labels.color":"blue","labels.instance":"http://app-blue:5000",
//	 "event.duration":1200345,"client.ip":"10.0.0.7","client.port":51234}
//
// A cutover or rollback record carries event.action ("cutover" or
// "rollback"), event.reason, labels.trigger, labels.color (the colour now
// live), labels.from_color and labels.generation.

// ecsVersion is the ECS release whose field names the handler writes.
const ecsVersion = "8.11.0"

// ecsRename maps an attribute name used by bluegreen's packages to its ECS
// field. proxy.Router.logAccess, health.Checker, rollout.Controller and
// cmd/bluegreen log these names.
var ecsRename = map[string]string{
	"method":     "http.request.method",
	"path":       "url.path",
	"status":     "http.response.status_code",
	"color":      "labels.color",
	"instance":   "labels.instance",
	"err":        "error.message",
	"error":      "error.message",
	"replica":    "service.node.name",
	"listen":     "labels.listen",
	"admin":      "labels.admin_listen",
	"log":        "log.logger",
	"from":       "labels.from_color",
	"trigger":    "labels.trigger",
	"reason":     "event.reason",
	"forced":     "labels.forced",
	"active":     "labels.color",
	"previous":   "labels.previous_color",
	"generation": "labels.generation",
}

// ecsHandler is a slog.Handler that writes ECS JSON lines through a
// slog.JSONHandler. It is immutable; WithAttrs and WithGroup return new
// handlers, so it is safe for concurrent use like the handler it wraps.
type ecsHandler struct {
	inner   slog.Handler
	service string
	// grouped: inside WithGroup, attribute names belong to the caller's
	// group and are not renamed.
	grouped bool
	// access: the logger carries log=access (the access log).
	access bool
}

// newECSHandler returns an ECS handler writing to w at level lvl, naming the
// service service.
func newECSHandler(w io.Writer, lvl slog.Leveler, service string) *ecsHandler {
	opts := &slog.HandlerOptions{Level: lvl, ReplaceAttr: ecsBuiltins}
	return &ecsHandler{inner: slog.NewJSONHandler(w, opts), service: service}
}

// ecsBuiltins renames the JSONHandler's own keys: time, level, msg.
func ecsBuiltins(groups []string, a slog.Attr) slog.Attr {
	if len(groups) > 0 {
		return a
	}
	switch a.Key {
	case slog.TimeKey:
		if t, ok := a.Value.Any().(time.Time); ok {
			return slog.String("@timestamp", t.UTC().Format("2006-01-02T15:04:05.000000000Z07:00"))
		}
		a.Key = "@timestamp"
	case slog.LevelKey:
		if l, ok := a.Value.Any().(slog.Level); ok {
			return slog.String("log.level", strings.ToLower(l.String()))
		}
		a.Key = "log.level"
	case slog.MessageKey:
		a.Key = "message"
	}
	return a
}

func (h *ecsHandler) Enabled(ctx context.Context, l slog.Level) bool {
	return h.inner.Enabled(ctx, l)
}

func (h *ecsHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	c := *h
	out := make([]slog.Attr, 0, len(attrs)+1)
	for _, a := range attrs {
		if !h.grouped && a.Key == "log" && a.Value.String() == "access" {
			c.access = true
		}
		out = h.appendMapped(out, a)
	}
	if c.access && !h.access && !h.grouped {
		out = append(out, slog.String("event.dataset", c.service+".access"))
	}
	c.inner = h.inner.WithAttrs(out)
	return &c
}

func (h *ecsHandler) WithGroup(name string) slog.Handler {
	if name == "" {
		return h
	}
	c := *h
	inner := h.inner
	if !h.grouped {
		// The record's own ECS fields stay at the top level; a group opened
		// by the caller lives in the custom namespace.
		inner = inner.WithAttrs(h.topLevel())
		name = "bluegreen." + name
	}
	c.inner = inner.WithGroup(name)
	c.grouped = true
	return &c
}

// topLevel returns the fields every record carries.
func (h *ecsHandler) topLevel() []slog.Attr {
	a := []slog.Attr{slog.String("ecs.version", ecsVersion), slog.String("service.name", h.service)}
	if !h.access {
		a = append(a, slog.String("event.dataset", h.service+".log"))
	}
	return a
}

func (h *ecsHandler) Handle(ctx context.Context, r slog.Record) error {
	out := slog.NewRecord(r.Time, r.Level, r.Message, r.PC)
	if !h.grouped {
		out.AddAttrs(h.topLevel()...)
	}
	attrs := make([]slog.Attr, 0, r.NumAttrs()+2)
	var trigger bool
	r.Attrs(func(a slog.Attr) bool {
		if a.Key == "trigger" {
			trigger = true
		}
		attrs = h.appendMapped(attrs, a)
		return true
	})
	// A switch of the active colour (rollout.Controller logs the action as
	// the message, with from, to, trigger and reason) is an event.
	if !h.grouped && trigger && (r.Message == "cutover" || r.Message == "rollback") {
		attrs = append(attrs, slog.String("event.action", r.Message), slog.String("event.kind", "event"))
	}
	out.AddAttrs(attrs...)
	return h.inner.Handle(ctx, out)
}

// appendMapped appends a, renamed to its ECS field (or split into several,
// for "remote" and "to"), to out.
func (h *ecsHandler) appendMapped(out []slog.Attr, a slog.Attr) []slog.Attr {
	if h.grouped {
		return append(out, a)
	}
	v := a.Value.Resolve()
	switch a.Key {
	case "":
		return out
	case "duration":
		// ECS event.duration is in nanoseconds.
		if v.Kind() == slog.KindDuration {
			return append(out, slog.Int64("event.duration", v.Duration().Nanoseconds()))
		}
	case "remote":
		host, port, err := net.SplitHostPort(v.String())
		if err != nil {
			return append(out, slog.String("client.address", v.String()))
		}
		out = append(out, slog.String("client.ip", host))
		if p, err := strconv.Atoi(port); err == nil {
			out = append(out, slog.Int("client.port", p))
		}
		return out
	case "proto":
		// ECS http.version: "1.1", "2.0".
		return append(out, slog.String("http.version", strings.TrimPrefix(v.String(), "HTTP/")))
	case "to":
		// The colour a switch goes to is the colour the record is about.
		return append(out, slog.String("labels.color", v.String()))
	case "generation", "forced":
		// ECS labels are keywords.
		return append(out, slog.String(ecsRename[a.Key], v.String()))
	}
	if name, ok := ecsRename[a.Key]; ok {
		return append(out, slog.Attr{Key: name, Value: v})
	}
	if v.Kind() == slog.KindGroup {
		return append(out, slog.Attr{Key: "bluegreen." + a.Key, Value: v})
	}
	if v.Kind() == slog.KindDuration {
		return append(out, slog.String("bluegreen."+a.Key, v.Duration().String()))
	}
	return append(out, slog.Attr{Key: "bluegreen." + a.Key, Value: v})
}
