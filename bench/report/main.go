// Command report turns the raw measurements of bench/run.sh into the
// Markdown results file: medians over rounds with min–max, ratios to nginx
// taken within each round, idle memory per connection and switch cost.
package main

import (
	"bufio"
	"flag"
	"fmt"
	"io"
	"os"
	"slices"
	"strconv"
	"strings"
)

type loadRow struct {
	round, conc               int
	name                      string
	rps, p50, p99, cpu, hwm   float64
	requests, non2xx, sockerr int
	backendCPU                float64
	reconnects                float64 // upstream connections opened per 1,000 requests; -1 when not measured
}

type idleRow struct {
	name            string
	n, held, failed int
	before, after   float64
}

type switchRow struct {
	name                         string
	conc, dur, switches, refused int
	requests, non2xx, sockerr    int
	p99                          float64
}

func num(s string) float64 {
	v, err := strconv.ParseFloat(s, 64)
	if err != nil {
		return -1 // NA
	}
	return v
}

func inum(s string) int { return int(num(s)) }

func main() {
	metaPath := flag.String("meta", "", "meta.tsv")
	rawPath := flag.String("raw", "", "raw.tsv")
	plotPath := flag.String("plot", "", "write the curve (medians per concurrency and target) to this file for gnuplot")
	charts := flag.String("charts", "", "base name of the PNG charts (BASE-rps.png, BASE-cpu.png, BASE-p99.png) to link")
	flag.Parse()
	meta, keys := readMeta(*metaPath)
	loads, idles, switches := readRaw(*rawPath)
	w := bufio.NewWriter(os.Stdout)
	defer w.Flush()
	write(w, meta, keys, loads, idles, switches, *charts)
	if *plotPath != "" {
		if err := os.WriteFile(*plotPath, curve(loads, order(loads, nil, nil)), 0o644); err != nil {
			fmt.Fprintln(os.Stderr, "report:", err)
			os.Exit(1)
		}
	}
}

// curve is the gnuplot table: one line per concurrency, then for each target
// its median req/s, CPU µs/req and p99 ms over the rounds ("NaN" where not
// measured); the header line names the targets.
func curve(loads []loadRow, names []string) []byte {
	var concs []int
	for _, l := range loads {
		if !slices.Contains(concs, l.conc) {
			concs = append(concs, l.conc)
		}
	}
	slices.Sort(concs)
	var b strings.Builder
	b.WriteString("# conns")
	for _, n := range names {
		b.WriteString(" " + n)
	}
	b.WriteString("\n")
	for _, c := range concs {
		fmt.Fprintf(&b, "%d", c)
		for _, n := range names {
			var rps, cpu, p99 []float64
			for _, l := range loads {
				if l.conc == c && l.name == n {
					rps, cpu, p99 = append(rps, l.rps), append(cpu, l.cpu), append(p99, l.p99)
				}
			}
			for _, st := range []stat{summarize(rps), summarize(cpu), summarize(p99)} {
				if st.n == 0 {
					b.WriteString(" NaN")
				} else {
					fmt.Fprintf(&b, " %.3f", st.med)
				}
			}
		}
		b.WriteString("\n")
	}
	return []byte(b.String())
}

func readMeta(path string) (map[string]string, []string) {
	m := map[string]string{}
	var keys []string
	b, err := os.ReadFile(path)
	if err != nil {
		fmt.Fprintln(os.Stderr, "report:", err)
		os.Exit(1)
	}
	for _, l := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		if k, v, ok := strings.Cut(l, "\t"); ok {
			m[k] = v
			keys = append(keys, k)
		}
	}
	return m, keys
}

func readRaw(path string) (loads []loadRow, idles []idleRow, switches []switchRow) {
	b, err := os.ReadFile(path)
	if err != nil {
		fmt.Fprintln(os.Stderr, "report:", err)
		os.Exit(1)
	}
	for _, l := range strings.Split(string(b), "\n") {
		f := strings.Split(l, "\t")
		switch {
		case f[0] == "load" && len(f) >= 13:
			loads = append(loads, loadRow{round: inum(f[1]), conc: inum(f[2]), name: f[3], rps: num(f[4]), p50: num(f[5]), p99: num(f[6]),
				cpu: num(f[7]), hwm: num(f[8]), requests: inum(f[9]), non2xx: inum(f[10]), sockerr: inum(f[11]), backendCPU: num(f[12]), reconnects: -1})
			if len(f) >= 14 {
				loads[len(loads)-1].reconnects = num(f[13])
			}
		case f[0] == "idle" && len(f) >= 7:
			idles = append(idles, idleRow{name: f[1], n: inum(f[2]), held: inum(f[3]), failed: inum(f[4]), before: num(f[5]), after: num(f[6])})
		case f[0] == "switch" && len(f) >= 10:
			switches = append(switches, switchRow{name: f[1], conc: inum(f[2]), dur: inum(f[3]), switches: inum(f[4]), refused: inum(f[5]),
				requests: inum(f[6]), non2xx: inum(f[7]), sockerr: inum(f[8]), p99: num(f[9])})
		}
	}
	return
}

// stat is a median with its range; ok is false when nothing was measured.
type stat struct {
	med, lo, hi float64
	n           int
}

func summarize(vs []float64) stat {
	var xs []float64
	for _, v := range vs {
		if v >= 0 {
			xs = append(xs, v)
		}
	}
	if len(xs) == 0 {
		return stat{}
	}
	slices.Sort(xs)
	m := xs[len(xs)/2]
	if len(xs)%2 == 0 {
		m = (xs[len(xs)/2-1] + xs[len(xs)/2]) / 2
	}
	return stat{med: m, lo: xs[0], hi: xs[len(xs)-1], n: len(xs)}
}

func (s stat) fmt(prec int) string {
	if s.n == 0 {
		return "–"
	}
	f := func(v float64) string { return strconv.FormatFloat(v, 'f', prec, 64) }
	if s.n == 1 {
		return f(s.med)
	}
	return f(s.med) + " (" + f(s.lo) + "–" + f(s.hi) + ")"
}

func order(loads []loadRow, idles []idleRow, sw []switchRow) []string {
	var names []string
	add := func(n string) {
		if !slices.Contains(names, n) {
			names = append(names, n)
		}
	}
	for _, n := range []string{"direct", "nginx", "haproxy", "caddy", "bluegreen", "bluegreen-gmp1", "bluegreen-nethttp", "bluegreen-alt"} {
		for _, l := range loads {
			if l.name == n {
				add(n)
			}
		}
		for _, l := range idles {
			if l.name == n {
				add(n)
			}
		}
		for _, l := range sw {
			if l.name == n {
				add(n)
			}
		}
	}
	for _, l := range loads {
		add(l.name)
	}
	return names
}

func write(w io.Writer, meta map[string]string, keys []string, loads []loadRow, idles []idleRow, switches []switchRow, charts string) {
	p := func(format string, a ...any) { fmt.Fprintf(w, format, a...) }
	p("# bluegreen benchmark: %s, %s\n\n", meta["date"], meta["host"])
	p("Written by `bench/run.sh`; every figure below is the harness's own measurement.\n")
	p("wrk → proxy → one Go backend (100-byte body, keep-alive), all on 127.0.0.1 and the same cores.\n")
	p("CPU µs/req is user+system CPU of the proxy's processes (from /proc, workers included) over the\n")
	p("measured run divided by the requests wrk completed. Ratios to nginx are taken within each round,\n")
	p("then summarised: median (min–max) over rounds.\n\n")
	p("## Machine and run\n\n| | |\n|---|---|\n")
	for _, k := range keys {
		p("| %s | %s |\n", k, strings.ReplaceAll(meta[k], "|", "\\|"))
	}
	names := order(loads, idles, switches)
	if charts != "" {
		p("\n## The curve\n\nMedians over rounds at each concurrency (log scale of connections).\n\n")
		p("![req/s](%s-rps.png)\n\n![CPU per request](%s-cpu.png)\n\n![p99 latency](%s-p99.png)\n", charts, charts, charts)
	}

	var concs []int
	for _, l := range loads {
		if !slices.Contains(concs, l.conc) {
			concs = append(concs, l.conc)
		}
	}
	slices.Sort(concs)
	ref := func(round, conc int) *loadRow {
		for i := range loads {
			if loads[i].round == round && loads[i].conc == conc && loads[i].name == "nginx" {
				return &loads[i]
			}
		}
		return nil
	}
	ratio := func(a, b float64) float64 {
		if a < 0 || b <= 0 {
			return -1
		}
		return a / b
	}
	type agg struct {
		rps, p50, p99, cpu, hwm, bcpu, rRps, rP99, rCPU, reconn stat
		errs                                                    int
	}
	aggs := map[int]map[string]agg{}
	for _, c := range concs {
		aggs[c] = map[string]agg{}
		p("\n## Load, %d connections\n\n", c)
		p("| proxy | req/s | × nginx | p50 ms | p99 ms | p99 × nginx | CPU µs/req | CPU × nginx | peak RSS MiB | backend CPU µs/req | upstream conns opened per 1k req | errors |\n")
		p("|---|---|---|---|---|---|---|---|---|---|---|---|\n")
		for _, n := range names {
			var rps, p50, p99, cpu, hwm, bcpu, rr, rp, rc, rec []float64
			errs, seen := 0, false
			for _, l := range loads {
				if l.conc != c || l.name != n {
					continue
				}
				seen = true
				rps, p50, p99 = append(rps, l.rps), append(p50, l.p50), append(p99, l.p99)
				cpu, bcpu, rec = append(cpu, l.cpu), append(bcpu, l.backendCPU), append(rec, l.reconnects)
				if l.hwm >= 0 {
					hwm = append(hwm, l.hwm/1024)
				}
				errs += l.non2xx + l.sockerr
				if r := ref(l.round, c); r != nil {
					rr = append(rr, ratio(l.rps, r.rps))
					rp = append(rp, ratio(l.p99, r.p99))
					rc = append(rc, ratio(l.cpu, r.cpu))
				}
			}
			if !seen {
				continue
			}
			a := agg{summarize(rps), summarize(p50), summarize(p99), summarize(cpu), summarize(hwm), summarize(bcpu), summarize(rr), summarize(rp), summarize(rc), summarize(rec), errs}
			aggs[c][n] = a
			p("| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %d |\n", n, a.rps.fmt(0), a.rRps.fmt(2), a.p50.fmt(2), a.p99.fmt(2), a.rP99.fmt(2),
				a.cpu.fmt(1), a.rCPU.fmt(2), a.hwm.fmt(1), a.bcpu.fmt(1), a.reconn.fmt(1), errs)
		}
	}
	if len(loads) > 0 {
		p("\n<details><summary>Every run</summary>\n\n| round | conns | proxy | req/s | p50 ms | p99 ms | CPU µs/req | peak RSS KiB | requests | non-2xx | socket errors | backend CPU µs/req | upstream conns opened per 1k req |\n")
		p("|---|---|---|---|---|---|---|---|---|---|---|---|---|\n")
		for _, l := range loads {
			p("| %d | %d | %s | %.0f | %.2f | %.2f | %s | %s | %d | %d | %d | %s | %s |\n", l.round, l.conc, l.name, l.rps, l.p50, l.p99,
				na(l.cpu, 1), na(l.hwm, 0), l.requests, l.non2xx, l.sockerr, na(l.backendCPU, 1), na(l.reconnects, 2))
		}
		p("\n</details>\n")
	}

	idleKB := map[string]float64{}
	if len(idles) > 0 {
		p("\n## Idle keep-alive client connections\n\n")
		p("RSS (VmRSS summed over the proxy's processes) before and after opening the connections, one request each, then idle.\n\n")
		p("| proxy | held | failed | RSS before KiB | RSS after KiB | KiB per connection | × nginx |\n|---|---|---|---|---|---|---|\n")
		for _, r := range idles {
			if r.held > 0 {
				idleKB[r.name] = (r.after - r.before) / float64(r.held)
			}
		}
		for _, r := range idles {
			kb, ok := idleKB[r.name]
			rs := "–"
			if ng, ok2 := idleKB["nginx"]; ok && ok2 && ng > 0 {
				rs = fmt.Sprintf("%.2f", kb/ng)
			}
			ks := "–"
			if ok {
				ks = fmt.Sprintf("%.1f", kb)
			}
			p("| %s | %d | %d | %.0f | %.0f | %s | %s |\n", r.name, r.held, r.failed, r.before, r.after, ks, rs)
		}
	}

	swFail := map[string]int{}
	if len(switches) > 0 {
		p("\n## Switching under load\n\n")
		p("wrk at c%d for %ds while the upstream flips between the two backend ports once a second:\n", switches[0].conc, switches[0].dur)
		p("nginx by rewriting its upstream and `SIGHUP` (reload), HAProxy by its runtime API (`set server bk/sN state ready|maint`),\n")
		p("bluegreen by `POST /admin/cutover`.\n\n")
		p("| proxy | switches | refused | requests | non-2xx | socket errors | failed total | p99 ms |\n|---|---|---|---|---|---|---|---|\n")
		for _, s := range switches {
			swFail[s.name] = s.non2xx + s.sockerr
			p("| %s | %d | %d | %d | %d | %d | %d | %.2f |\n", s.name, s.switches, s.refused, s.requests, s.non2xx, s.sockerr, s.non2xx+s.sockerr, s.p99)
		}
	}

	// The targets of the performance issue, for each bluegreen variant.
	for _, n := range names {
		if !strings.HasPrefix(n, "bluegreen") {
			continue
		}
		p("\n## Targets: %s against nginx\n\n| target | measured (median of rounds) | met |\n|---|---|---|\n", n)
		verdict := func(ok bool) string {
			if ok {
				return "yes"
			}
			return "no"
		}
		for _, c := range concs {
			a, ok := aggs[c][n]
			if !ok || a.rCPU.n == 0 {
				continue
			}
			const limit = 1.0 // the goals of performance round 2 (issue 17), at every concurrency
			p("| CPU/req ≤ %.1f× nginx at c%d | %s× | %s |\n", limit, c, a.rCPU.fmt(2), verdict(a.rCPU.med <= limit))
			p("| req/s ≥ 1.0× nginx at c%d | %s× | %s |\n", c, a.rRps.fmt(2), verdict(a.rRps.med >= 1))
			p("| p99 ≤ nginx at c%d | %s× | %s |\n", c, a.rP99.fmt(2), verdict(a.rP99.med <= 1))
		}
		if kb, ok := idleKB[n]; ok {
			p("| idle memory ≤ 2 KiB per client connection | %.1f KiB | %s |\n", kb, verdict(kb <= 2))
		}
		if f, ok := swFail[n]; ok {
			p("| 0 failed requests across switches | %d | %s |\n", f, verdict(f == 0))
		}
	}
}

func na(v float64, prec int) string {
	if v < 0 {
		return "NA"
	}
	return strconv.FormatFloat(v, 'f', prec, 64)
}
