package main

import (
	"context"
	"log/slog"
	"net/netip"
	"net/url"
	"slices"
	"strings"
	"time"
)

// One URL is one instance. A name that resolves to several addresses of
// one family (a compose service scaled to three, a round-robin DNS name)
// is still one instance to the proxy: each new connection goes to the
// first address the resolver gives, health is that of whichever address a
// probe reached, and outlier detection ejects all of them or none. nginx
// resolves such a name once and balances over its addresses; the proxy
// resolves at every connection (a restarted container's new address is
// used at once) and says what it sees instead.

// lookupFunc resolves a host name to its addresses (net.Resolver.LookupNetIP
// with network "ip").
type lookupFunc func(ctx context.Context, host string) ([]netip.Addr, error)

// scaledNames watches the instances whose host is a name, and warns when
// one resolves to more than one address of a family: at start-up and,
// since a service can be scaled later, every interval, once for each
// change of what it resolves to. Lookups that fail say nothing (the name
// may not exist yet while its containers start).
type scaledNames struct {
	lookup   lookupFunc
	interval time.Duration
	log      *slog.Logger
	warned   map[string]string // host: the addresses last warned of
}

// run checks the hosts of instances until ctx ends.
func (s *scaledNames) run(ctx context.Context, instances []*url.URL) {
	hosts := map[string][]string{} // host name: its instance URLs
	for _, u := range instances {
		h := u.Hostname()
		if _, err := netip.ParseAddr(h); err == nil {
			continue
		}
		hosts[h] = append(hosts[h], u.String())
	}
	if len(hosts) == 0 {
		return
	}
	s.warned = map[string]string{}
	t := time.NewTicker(s.interval)
	defer t.Stop()
	for {
		for h, urls := range hosts {
			s.check(ctx, h, urls)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func (s *scaledNames) check(ctx context.Context, host string, urls []string) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	addrs, err := s.lookup(ctx, host)
	if err != nil {
		return
	}
	var v4, v6 int
	for i, a := range addrs {
		addrs[i] = a.Unmap() // the resolver may give IPv4 in IPv6 form
		if addrs[i].Is4() {
			v4++
		} else {
			v6++
		}
	}
	if v4 < 2 && v6 < 2 {
		delete(s.warned, host) // scaled back down: warn again if it grows
		return
	}
	slices.SortFunc(addrs, func(a, b netip.Addr) int { return a.Compare(b) })
	seen := make([]string, len(addrs))
	for i, a := range addrs {
		seen[i] = a.String()
	}
	key := strings.Join(seen, " ")
	if s.warned[host] == key {
		return
	}
	s.warned[host] = key
	s.log.Warn("an instance's name resolves to several addresses: the proxy sees one instance, "+
		"so its health checks, outlier detection and balancing do not tell them apart; list each address or each replica's own name",
		"instances", urls, "host", host, "addresses", seen)
}
