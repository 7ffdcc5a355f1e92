package postfixsetup

import (
	"bytes"
	"context"
	"errors"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/onionmx/onionmx/internal/sockstest"
	"github.com/onionmx/onionmx/lookup"
	"github.com/onionmx/onionmx/tor"
)

// These tests run the real postconf and postmap against a configuration
// directory of their own, made from Debian's default main.cf and
// master.cf: what setup promises is what Postfix's own tools do to those
// files. They skip where Postfix is not installed.

// Debian's defaults, as its postfix package installs them.
const (
	distMain   = "/usr/share/postfix/main.cf.debian"
	distMaster = "/usr/share/postfix/master.cf.dist"
)

// newConfig makes a configuration directory from Debian's defaults, with
// extraMain appended to main.cf and extraMaster to master.cf.
func newConfig(t *testing.T, extraMain, extraMaster string) *Postfix {
	t.Helper()
	p := &Postfix{Dir: t.TempDir()}
	if !p.Available() {
		t.Skip("postconf is not installed")
	}
	for _, f := range []struct{ src, name, extra string }{{distMain, "main.cf", extraMain}, {distMaster, "master.cf", extraMaster}} {
		b, err := os.ReadFile(f.src)
		if err != nil {
			t.Skipf("no Debian default configuration: %v", err)
		}
		if err := os.WriteFile(filepath.Join(p.Dir, f.name), append(b, f.extra...), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return p
}

func options(p *Postfix) *Options {
	return &Options{
		Service:      "onionmx",
		User:         "nobody",
		Binary:       "/usr/bin/onionmx",
		Map:          filepath.Join(p.Dir, "onionmx_transport"),
		DeliverFlags: []string{"--socks", "127.0.0.1:9050"},
		LookupFlags:  []string{"--self", "example.org", "--map", filepath.Join(p.Dir, "onionmx_transport")},
	}
}

func statePath(p *Postfix) string { return filepath.Join(p.Dir, StateFile) }

// snapshot is every file of the configuration directory.
func snapshot(t *testing.T, dir string) map[string][]byte {
	t.Helper()
	files := map[string][]byte{}
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		b, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		files[e.Name()] = b
	}
	return files
}

// sameFiles fails unless dir holds exactly the files of want, byte for byte.
func sameFiles(t *testing.T, dir string, want map[string][]byte) {
	t.Helper()
	got := snapshot(t, dir)
	for name, b := range want {
		if g, ok := got[name]; !ok {
			t.Errorf("%s is gone", name)
		} else if !bytes.Equal(g, b) {
			t.Errorf("%s is not byte for byte what it was:\n%s", name, lineDiff(string(b), string(g)))
		}
	}
	for name := range got {
		if _, ok := want[name]; !ok {
			t.Errorf("%s is new", name)
		}
	}
}

// lineDiff lists the lines only one of a and b has.
func lineDiff(a, b string) string {
	var out []string
	in := func(s, line string) bool { return strings.Contains("\n"+s, "\n"+line+"\n") }
	for _, l := range strings.Split(a, "\n") {
		if !in(b, l) {
			out = append(out, "- "+l)
		}
	}
	for _, l := range strings.Split(b, "\n") {
		if !in(a, l) {
			out = append(out, "+ "+l)
		}
	}
	return strings.Join(out, "\n")
}

func setup(t *testing.T, p *Postfix, o *Options) *Result {
	t.Helper()
	res, err := Setup(context.Background(), p, statePath(p), o, false)
	if err != nil {
		t.Fatalf("setup: %v", err)
	}
	return res
}

func remove(t *testing.T, p *Postfix) *Result {
	t.Helper()
	res, err := Remove(context.Background(), p, statePath(p), false)
	if err != nil {
		t.Fatalf("remove: %v", err)
	}
	return res
}

func paramOf(t *testing.T, p *Postfix, name string) string {
	t.Helper()
	v, _, err := p.Param(context.Background(), name)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// postconfQuiet fails when postconf warns about the configuration: a
// parameter of a service master.cf lacks, a broken entry.
func postconfQuiet(t *testing.T, p *Postfix) {
	t.Helper()
	for _, args := range [][]string{{"-n"}, {"-M"}, {"-P"}} {
		out, err := exec.Command(p.path("postconf"), append([]string{"-c", p.Dir}, args...)...).CombinedOutput()
		if err != nil || bytes.Contains(out, []byte("warning")) {
			t.Errorf("postconf %s: %v: %s", args, err, out)
		}
	}
}

func TestSetupFresh(t *testing.T) {
	t.Parallel()
	p := newConfig(t, "", "")
	before := snapshot(t, p.Dir)
	res := setup(t, p, options(p))
	if len(res.Changes) != 7 {
		t.Errorf("%d changes, want 7 (map, postmap, 2 services, 3 parameters): %v", len(res.Changes), res.Changes)
	}
	ctx := context.Background()
	entry, err := p.Service(ctx, "onionmx/unix")
	if err != nil || !sameEntry(Value{Set: true, Value: entry}, Value{Set: true, Value: pipeEntry(options(p))}) {
		t.Errorf("onionmx/unix = %q (%v), want %q", entry, err, pipeEntry(options(p)))
	}
	if entry, _ := p.Service(ctx, "onionmx-lookup/unix"); !strings.Contains(entry, " spawn user=nobody argv=/usr/bin/onionmx socketmap --self example.org --map ") {
		t.Errorf("onionmx-lookup/unix = %q", entry)
	}
	for name, want := range map[string]string{
		"onionmx_destination_recipient_limit": "1",
		"onionmx_time_limit":                  "1000s",
		"transport_maps":                      "hash:" + p.Dir + "/onionmx_transport, socketmap:unix:private/onionmx-lookup:onionmx",
	} {
		if got := paramOf(t, p, name); got != want {
			t.Errorf("%s = %q, want %q", name, got, want)
		}
	}
	postconfQuiet(t, p)
	for _, f := range []string{"onionmx_transport", "onionmx_transport.db", StateFile} {
		if !exists(filepath.Join(p.Dir, f)) {
			t.Errorf("no %s", f)
		}
	}
	// Postfix itself can read the map it postmapped.
	if _, found, err := p.Query(ctx, p.Dir, "example.org", "hash:"+p.Dir+"/onionmx_transport"); err != nil || found {
		t.Errorf("the empty map: found %v, %v", found, err)
	}

	after := snapshot(t, p.Dir)
	res = setup(t, p, options(p))
	if len(res.Changes) != 0 {
		t.Errorf("a second setup changes %v", res.Changes)
	}
	sameFiles(t, p.Dir, after)

	remove(t, p)
	sameFiles(t, p.Dir, before)
}

func TestDryRun(t *testing.T) {
	t.Parallel()
	p := newConfig(t, "", "")
	before := snapshot(t, p.Dir)
	res, err := Setup(context.Background(), p, statePath(p), options(p), true)
	if err != nil {
		t.Fatal(err)
	}
	sameFiles(t, p.Dir, before)
	// What it printed is what a real run does.
	if real := setup(t, p, options(p)); !equalChanges(res.Changes, real.Changes) {
		t.Errorf("dry run: %v\nreal run: %v", res.Changes, real.Changes)
	}
	after := snapshot(t, p.Dir)
	res, err = Remove(context.Background(), p, statePath(p), true)
	if err != nil || len(res.Changes) != 7 {
		t.Fatalf("dry removal: %v, %v", res, err)
	}
	sameFiles(t, p.Dir, after)
}

func equalChanges(a, b []Change) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i].String() != b[i].String() {
			return false
		}
	}
	return true
}

// An existing transport_maps is refused, and nothing is changed; with
// PrependTransportMaps onionmx's tables go first. The existing value spans
// continuation lines, which postconf rewrites on one line: removal puts
// main.cf back byte for byte anyway.
func TestTransportMaps(t *testing.T) {
	t.Parallel()
	p := newConfig(t, "transport_maps = hash:/etc/postfix/transport,\n    hash:/etc/postfix/other\n", "")
	before := snapshot(t, p.Dir)
	_, err := Setup(context.Background(), p, statePath(p), options(p), false)
	var conflict *ConflictError
	if !errors.As(err, &conflict) || !strings.Contains(err.Error(), "transport_maps = hash:/etc/postfix/transport, hash:/etc/postfix/other") || !strings.Contains(err.Error(), "--prepend-transport-maps") {
		t.Fatalf("got %v, want a ConflictError naming the value and --prepend-transport-maps", err)
	}
	sameFiles(t, p.Dir, before)

	o := options(p)
	o.PrependTransportMaps = true
	setup(t, p, o)
	want := "hash:" + p.Dir + "/onionmx_transport, socketmap:unix:private/onionmx-lookup:onionmx, hash:/etc/postfix/transport, hash:/etc/postfix/other"
	if got := paramOf(t, p, "transport_maps"); got != want {
		t.Errorf("transport_maps = %q, want %q", got, want)
	}
	if res := setup(t, p, o); len(res.Changes) != 0 {
		t.Errorf("a second setup changes %v", res.Changes)
	}
	res := remove(t, p)
	sameFiles(t, p.Dir, before)
	if len(res.Notes) != 1 || !strings.Contains(res.Notes[0], "put back") {
		t.Errorf("notes %q, want one that says main.cf was put back", res.Notes)
	}
}

// transport_maps that names onionmx's tables out of order is the
// administrator's to fix.
func TestTransportMapsOurs(t *testing.T) {
	t.Parallel()
	p := newConfig(t, "", "")
	tables := Tables("hash", filepath.Join(p.Dir, "onionmx_transport"), "onionmx")
	for _, tc := range []struct {
		value  string
		change bool
	}{
		{tables[0] + ", " + tables[1], false},
		{tables[0] + "," + tables[1] + " hash:/x", false},
		{tables[1] + ", " + tables[0], true},
		{"hash:/x, " + tables[1], true},
	} {
		after, err := transportMaps(Value{Set: true, Value: tc.value}, tables, true)
		switch {
		case tc.change && err == nil:
			t.Errorf("%q: %v, want a conflict", tc.value, after)
		case !tc.change && (err != nil || after.Value != tc.value):
			t.Errorf("%q: %v, %v, want it unchanged", tc.value, after, err)
		}
	}
}

// A service of the same name that setup did not make is refused; one
// exactly like setup's (made by hand from the README) is left alone, and
// removal does not take it.
func TestServiceConflict(t *testing.T) {
	t.Parallel()
	p := newConfig(t, "", "onionmx unix - n n - - pipe flags=q user=nobody argv=/usr/local/bin/onionmx deliver -- ${recipient}\n")
	before := snapshot(t, p.Dir)
	_, err := Setup(context.Background(), p, statePath(p), options(p), false)
	var conflict *ConflictError
	if !errors.As(err, &conflict) || !strings.Contains(err.Error(), "onionmx/unix") || !strings.Contains(err.Error(), "--service") {
		t.Fatalf("got %v, want a ConflictError naming onionmx/unix and --service", err)
	}
	sameFiles(t, p.Dir, before)

	// Another name works beside it.
	o := options(p)
	o.Service = "onionmx2"
	setup(t, p, o)
	if got := paramOf(t, p, "transport_maps"); !strings.Contains(got, "socketmap:unix:private/onionmx2-lookup:onionmx2") {
		t.Errorf("transport_maps = %q", got)
	}
	postconfQuiet(t, p)
	remove(t, p)
	sameFiles(t, p.Dir, before)

	p = newConfig(t, "", pipeEntry(options(p))+"\n")
	o = options(p)
	res := setup(t, p, o)
	for _, c := range res.Changes {
		if strings.Contains(c.String(), "onionmx/unix") {
			t.Errorf("changed the existing, identical service: %v", c)
		}
	}
	remove(t, p)
	if entry, _ := p.Service(context.Background(), "onionmx/unix"); entry == "" {
		t.Error("removal took the service setup did not make")
	}
}

// A main.cf parameter of the service that the administrator set to
// another value is refused; one set to the same value is left alone.
func TestParamConflict(t *testing.T) {
	t.Parallel()
	p := newConfig(t, "onionmx_destination_recipient_limit = 5\n", "")
	_, err := Setup(context.Background(), p, statePath(p), options(p), false)
	var conflict *ConflictError
	if !errors.As(err, &conflict) || !strings.Contains(err.Error(), "onionmx_destination_recipient_limit = 5") {
		t.Fatalf("got %v, want a ConflictError naming the parameter", err)
	}
	p = newConfig(t, "onionmx_time_limit = 1000s\n", "")
	before := snapshot(t, p.Dir)
	res := setup(t, p, options(p))
	for _, c := range res.Changes {
		if strings.Contains(c.String(), "onionmx_time_limit") {
			t.Errorf("changed the parameter that was already right: %v", c)
		}
	}
	remove(t, p)
	sameFiles(t, p.Dir, before)
}

// New options update setup's own settings; removal still restores the
// files as they were before the first setup.
func TestSetupAgainWithOtherOptions(t *testing.T) {
	t.Parallel()
	p := newConfig(t, "", "")
	before := snapshot(t, p.Dir)
	setup(t, p, options(p))
	o := options(p)
	o.DeliverFlags = []string{"--socks", "unix:/run/tor/socks"}
	res := setup(t, p, o)
	if len(res.Changes) != 1 || !strings.Contains(res.Changes[0].String(), "--socks unix:/run/tor/socks") {
		t.Errorf("changes %v, want the pipe service's only", res.Changes)
	}
	remove(t, p)
	sameFiles(t, p.Dir, before)
}

func TestRemoveNeverSetUp(t *testing.T) {
	t.Parallel()
	p := newConfig(t, "", "")
	before := snapshot(t, p.Dir)
	if _, err := Remove(context.Background(), p, statePath(p), false); !errors.Is(err, ErrNotSetUp) {
		t.Errorf("got %v, want ErrNotSetUp", err)
	}
	sameFiles(t, p.Dir, before)
}

// A setting setup made and the administrator changed since: removal
// refuses, names it, and changes nothing.
func TestRemoveAfterChange(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ name, args string }{
		{"transport_maps", "-e transport_maps=hash:/etc/postfix/transport"},
		{"onionmx_time_limit", "-e onionmx_time_limit=2000s"},
		{"service onionmx-lookup/unix", "-P onionmx-lookup/unix/user=other"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			p := newConfig(t, "", "")
			setup(t, p, options(p))
			if out, err := exec.Command(p.path("postconf"), append([]string{"-c", p.Dir}, strings.Fields(tc.args)...)...).CombinedOutput(); err != nil {
				t.Fatalf("postconf %s: %v: %s", tc.args, err, out)
			}
			changed := snapshot(t, p.Dir)
			_, err := Remove(context.Background(), p, statePath(p), false)
			var ce *ChangedError
			if !errors.As(err, &ce) || ce.Name != tc.name || !strings.Contains(err.Error(), "postconf -c "+p.Dir+" -X transport_maps") {
				t.Fatalf("got %v, want a ChangedError for %s with the commands to undo by hand", err, tc.name)
			}
			sameFiles(t, p.Dir, changed)
		})
	}
}

// An edit elsewhere after setup: onionmx's settings are undone, the edit
// stays, and a note says the file is not what it was before setup.
func TestRemoveAfterOtherEdit(t *testing.T) {
	t.Parallel()
	p := newConfig(t, "", "")
	setup(t, p, options(p))
	if out, err := exec.Command(p.path("postconf"), "-c", p.Dir, "-e", "myhostname=mx.example.org").CombinedOutput(); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	res := remove(t, p)
	if len(res.Notes) != 1 || !strings.Contains(res.Notes[0], "main.cf is not byte for byte") {
		t.Errorf("notes %q", res.Notes)
	}
	if got := paramOf(t, p, "myhostname"); got != "mx.example.org" {
		t.Errorf("myhostname = %q: the administrator's edit is lost", got)
	}
	if got := paramOf(t, p, "transport_maps"); got != "" {
		t.Errorf("transport_maps = %q after removal", got)
	}
}

// A static map that got entries is kept.
func TestRemoveKeepsFilledMap(t *testing.T) {
	t.Parallel()
	p := newConfig(t, "", "")
	setup(t, p, options(p))
	m := filepath.Join(p.Dir, "onionmx_transport")
	if err := os.WriteFile(m, []byte("example.org onionmx:\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	res := remove(t, p)
	if !exists(m) || !exists(m+".db") {
		t.Error("removed the filled map or its database")
	}
	if len(res.Notes) != 1 || !strings.Contains(res.Notes[0], "kept the static map") {
		t.Errorf("notes %q", res.Notes)
	}
}

// postconf appends to a last line without a line end ("hash:/bonionmx_...",
// tried with Postfix 3.7): refused before anything is changed.
func TestNoFinalLineEnd(t *testing.T) {
	t.Parallel()
	p := newConfig(t, "transport_maps = hash:/a,\n  hash:/b", "")
	before := snapshot(t, p.Dir)
	o := options(p)
	o.PrependTransportMaps = true
	_, err := Setup(context.Background(), p, statePath(p), o, false)
	var conflict *ConflictError
	if !errors.As(err, &conflict) || !strings.Contains(err.Error(), "main.cf does not end with a line end") {
		t.Fatalf("got %v", err)
	}
	sameFiles(t, p.Dir, before)
}

// A main.cf or master.cf that is a symbolic link (to a file kept
// elsewhere, by hand or by configuration management): postconf would
// replace the link with a file, so setup and removal refuse, changing
// nothing, and the link stays.
func TestSymlinkedFiles(t *testing.T) {
	t.Parallel()
	for _, name := range []string{"main.cf", "master.cf"} {
		for _, op := range []string{"setup", "remove"} {
			t.Run(name+"/"+op, func(t *testing.T) {
				t.Parallel()
				p := newConfig(t, "", "")
				if op == "remove" {
					setup(t, p, options(p))
				}
				path := filepath.Join(p.Dir, name)
				target := filepath.Join(t.TempDir(), name)
				if err := os.Rename(path, target); err != nil {
					t.Fatal(err)
				}
				if err := os.Symlink(target, path); err != nil {
					t.Fatal(err)
				}
				before := snapshot(t, p.Dir)
				var err error
				if op == "setup" {
					_, err = Setup(context.Background(), p, statePath(p), options(p), false)
				} else {
					_, err = Remove(context.Background(), p, statePath(p), false)
				}
				var conflict *ConflictError
				if !errors.As(err, &conflict) || !strings.Contains(err.Error(), name+" is a symbolic link (to "+target+")") {
					t.Fatalf("got %v, want a refusal", err)
				}
				sameFiles(t, p.Dir, before)
				if fi, err := os.Lstat(path); err != nil || fi.Mode()&os.ModeSymlink == 0 {
					t.Errorf("%s is no longer a symbolic link (%v)", name, err)
				}
			})
		}
	}
}

// Two runs at once: the second is refused while the first holds the lock.
func TestBusy(t *testing.T) {
	t.Parallel()
	p := newConfig(t, "", "")
	unlock, err := lockDir(p.Dir)
	if err != nil {
		t.Fatal(err)
	}
	defer unlock()
	before := snapshot(t, p.Dir)
	if _, err := Setup(context.Background(), p, statePath(p), options(p), false); !errors.Is(err, ErrBusy) {
		t.Errorf("setup: got %v, want ErrBusy", err)
	}
	if _, err := Remove(context.Background(), p, statePath(p), false); !errors.Is(err, ErrBusy) {
		t.Errorf("remove: got %v, want ErrBusy", err)
	}
	sameFiles(t, p.Dir, before)
}

func TestMainParam(t *testing.T) {
	t.Parallel()
	p := &Postfix{Dir: t.TempDir()}
	main := "# a = 1\na = 2\nb=3\n  # comment\nc = x,\n    y\n\tz\na = 4\n"
	if err := os.WriteFile(filepath.Join(p.Dir, "main.cf"), []byte(main), 0o644); err != nil {
		t.Fatal(err)
	}
	for name, want := range map[string]Value{
		"a": {Set: true, Value: "4"},
		"b": {Set: true, Value: "3"},
		"c": {Set: true, Value: "x, y z"},
		"d": {},
	} {
		if got, err := p.MainParam(name); err != nil || got != want {
			t.Errorf("%s: %v, %v, want %v", name, got, err, want)
		}
	}
}

func TestProbeOnions(t *testing.T) {
	t.Parallel()
	if err := lookup.CheckOnion(BadOnion); err == nil {
		t.Errorf("%s is a valid onion: Tor would try to reach it", BadOnion)
	}
	if _, onion := LookupKey(); lookup.CheckOnion(onion) != nil {
		t.Errorf("%s is not a valid onion: the lookup service would not route it", onion)
	}
}

func TestCheckTor(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		reply byte
		want  string
	}{
		{0xF6, "ok: ExtendedErrors is on"},
		{0x01, "problem: ExtendedErrors is off (Tor answered an invalid onion address with general SOCKS server failure (SOCKS reply 01), not F6): without it onionmx cannot tell why an onion failed; in torrc: SocksPort 127.0.0.1:"},
	} {
		s := sockstest.New(t, func(r sockstest.Request) sockstest.Response {
			if r.Host != BadOnion || r.ATYP != 3 {
				t.Errorf("CONNECT %s (ATYP %d), want %s by name", r.Host, r.ATYP, BadOnion)
			}
			return sockstest.Response{Reply: tc.reply}
		})
		d, err := tor.ParseSOCKS(s.Addr)
		if err != nil {
			t.Fatal(err)
		}
		found := CheckTor(context.Background(), d)
		if len(found) != 2 || found[0].String() != "ok: Tor SocksPort "+s.Addr+" answers SOCKS5" || !strings.HasPrefix(found[1].String(), tc.want) {
			t.Errorf("reply %02X: %q, want %q", tc.reply, found, tc.want)
		}
	}
	d, _ := tor.ParseSOCKS(sockstest.Closed(t))
	if found := CheckTor(context.Background(), d); len(found) != 1 || !found[0].Problem {
		t.Errorf("nothing listening: %q", found)
	}
}

// Another service name or map needs --remove first: the earlier setup's
// services would stay behind, forgotten.
func TestSetupAgainWithOtherName(t *testing.T) {
	t.Parallel()
	p := newConfig(t, "", "")
	setup(t, p, options(p))
	after := snapshot(t, p.Dir)
	for name, change := range map[string]func(*Options){
		"service": func(o *Options) { o.Service = "onionmx2" },
		"map":     func(o *Options) { o.Map = filepath.Join(p.Dir, "other_transport") },
	} {
		o := options(p)
		change(o)
		_, err := Setup(context.Background(), p, statePath(p), o, false)
		var conflict *ConflictError
		if !errors.As(err, &conflict) || !strings.Contains(err.Error(), "--remove first") {
			t.Errorf("another %s: got %v, want a ConflictError that says --remove first", name, err)
		}
	}
	sameFiles(t, p.Dir, after)
}

// The user= account must be able to open a unix SocksPort; setup runs as
// root, the services do not.
func TestCheckSocketAccess(t *testing.T) {
	t.Parallel()
	// Not t.TempDir(), whose parent only its owner may search.
	dir, err := os.MkdirTemp("", "onionmx-socket")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "socks")
	l, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	for _, tc := range []struct {
		mode os.FileMode
		want string
	}{
		{0o666, "ok: user nobody may open " + path},
		{0o660, "problem: user nobody may not open " + path + " (Srw-rw----"},
	} {
		if err := os.Chmod(path, tc.mode); err != nil {
			t.Fatal(err)
		}
		if got := CheckSocketAccess(path, "nobody").String(); !strings.HasPrefix(got, tc.want) {
			t.Errorf("mode %o: %q, want %q", tc.mode, got, tc.want)
		}
	}
	if err := os.Chmod(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if got := CheckSocketAccess(path, "nobody").String(); os.Getuid() != 65534 && !strings.HasPrefix(got, "problem: user nobody may not reach "+path+": the directory "+dir+" drwx------") {
		t.Errorf("a closed directory: %q", got)
	}
}

func TestTorrcAddr(t *testing.T) {
	for in, want := range map[string]string{"unix:/run/tor/socks": "unix:/run/tor/socks", "127.0.0.1:9050": "127.0.0.1:9050"} {
		d, err := tor.ParseSOCKS(in)
		if err != nil {
			t.Fatal(err)
		}
		if got := torrcAddr(d); got != want {
			t.Errorf("%s: %q", in, got)
		}
	}
}

// An edit between two setups that both changed something: the copy taken
// before the first is no longer the file without onionmx's settings, and
// must not be put back over the edit.
func TestEditBetweenSetups(t *testing.T) {
	t.Parallel()
	p := newConfig(t, "", "")
	setup(t, p, options(p))
	if out, err := exec.Command(p.path("postconf"), "-c", p.Dir, "-e", "myhostname=mx.example.org").CombinedOutput(); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	o := options(p)
	o.DeliverFlags = []string{"--socks", "127.0.0.1:9150"}
	if res := setup(t, p, o); len(res.Changes) != 1 {
		t.Fatalf("changes %v, want the pipe service's", res.Changes)
	}
	res := remove(t, p)
	if got := paramOf(t, p, "myhostname"); got != "mx.example.org" {
		t.Errorf("myhostname = %q: the edit between the setups is lost", got)
	}
	if len(res.Notes) != 1 || !strings.Contains(res.Notes[0], "main.cf was changed between two setups") {
		t.Errorf("notes %q", res.Notes)
	}
	if got := paramOf(t, p, "transport_maps"); got != "" {
		t.Errorf("transport_maps = %q after removal", got)
	}
}

// failingPostconf is a Bin directory whose postconf fails a command line
// that contains fail, and runs the real one otherwise: a setup that dies
// half-way (postconf failing, or the person pressing ^C) leaves the same
// state file.
func failingPostconf(t *testing.T, p *Postfix, fail string) string {
	t.Helper()
	bin := t.TempDir()
	for _, name := range []string{"postmap", "postfix"} {
		if err := os.Symlink(p.path(name), filepath.Join(bin, name)); err != nil {
			t.Fatal(err)
		}
	}
	script := "#!/bin/sh\ncase \"$*\" in *'" + fail + "'*) echo interrupted >&2; exit 1;; esac\nexec " + p.path("postconf") + " \"$@\"\n"
	if err := os.WriteFile(filepath.Join(bin, "postconf"), []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	return bin
}

// A setup interrupted after it changed main.cf, then run again to the end,
// then removed: main.cf is byte for byte what it was, as after a setup
// that was never interrupted (nobody but setup changed it in between).
func TestInterruptedSetupRemovesToSameBytes(t *testing.T) {
	t.Parallel()
	// Written over two lines, which postconf -e cannot put back.
	p := newConfig(t, "transport_maps = hash:/etc/postfix/transport,\n    hash:/etc/postfix/other\n", "")
	before := snapshot(t, p.Dir)
	o := options(p)
	o.PrependTransportMaps = true
	half := &Postfix{Dir: p.Dir, Bin: failingPostconf(t, p, "onionmx_time_limit")}
	if _, err := Setup(context.Background(), half, statePath(p), o, false); err == nil || !strings.Contains(err.Error(), "interrupted") {
		t.Fatalf("the interrupted setup: %v", err)
	}
	if res := setup(t, p, o); len(res.Changes) != 2 {
		t.Errorf("setup again: changes %v, want the two it had not made", res.Changes)
	}
	res := remove(t, p)
	sameFiles(t, p.Dir, before)
	if len(res.Notes) != 1 || !strings.Contains(res.Notes[0], "put back "+p.Dir+"/main.cf") {
		t.Errorf("notes %q", res.Notes)
	}
}

// Whether the services' account may run the binary: a build under a
// directory only its owner may enter (as /root) is refused, and so is a
// file only its owner may run, since pipe(8) bounces every message it
// cannot run. And whether it may read the static map.
func TestCheckRun(t *testing.T) {
	t.Parallel()
	// Under the system's temporary directory, not t.TempDir, which only
	// its owner may enter.
	open, err := os.MkdirTemp("", "checkrun")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(open) })
	private := filepath.Join(open, "private")
	for _, d := range []struct {
		path string
		mode os.FileMode
	}{{open, 0o755}, {private, 0o700}} {
		if err := os.MkdirAll(d.path, d.mode); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(d.path, d.mode); err != nil {
			t.Fatal(err)
		}
	}
	for _, f := range []struct {
		path string
		mode os.FileMode
	}{{filepath.Join(private, "onionmx"), 0o755}, {filepath.Join(open, "onionmx"), 0o755}, {filepath.Join(open, "mine"), 0o744}} {
		if err := os.WriteFile(f.path, []byte("#!/bin/sh\n"), f.mode); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(f.path, f.mode); err != nil {
			t.Fatal(err)
		}
	}
	for path, want := range map[string]string{
		"/bin/true":                       "",
		filepath.Join(open, "onionmx"):    "",
		filepath.Join(private, "onionmx"): "user nobody may not run it: the directory " + private + " is drwx------ ",
		filepath.Join(open, "mine"):       "user nobody may not run it: it is -rwxr--r-- ",
	} {
		err := CheckRun(path, "nobody")
		if want == "" && err != nil || want != "" && (err == nil || !strings.Contains(err.Error(), want)) {
			t.Errorf("CheckRun(%s): %v, want %q", path, err, want)
		}
	}
	// The static map, which the lookup service reads as that account; one
	// that does not exist yet is made where it must be reached.
	for path, want := range map[string]string{
		filepath.Join(open, "onionmx"):    "",
		filepath.Join(open, "new"):        "",
		filepath.Join(private, "onionmx"): "user nobody may not read it: the directory " + private + " is drwx------ ",
		filepath.Join(private, "new"):     "user nobody may not reach it: it is drwx------ ",
	} {
		err := CheckRead(path, "nobody")
		if want == "" && err != nil || want != "" && (err == nil || !strings.Contains(err.Error(), want)) {
			t.Errorf("CheckRead(%s): %v, want %q", path, err, want)
		}
	}
}

// A trivial-rewrite service with its own transport_maps (-o) never asks
// main.cf's: setup refuses, changing nothing, unless onionmx's tables come
// first there too. An override on another service (it does not resolve
// addresses) is no matter.
func TestTrivialRewriteOverride(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name, service, value string
		refused              bool
	}{
		{"rewrite", "rewrite/unix", "hash:/etc/postfix/transport", true},
		{"ours first", "rewrite/unix", "hash:DIR/onionmx_transport,socketmap:unix:private/onionmx-lookup:onionmx,hash:/etc/postfix/transport", false},
		{"smtpd", "smtp/inet", "hash:/etc/postfix/transport", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			p := newConfig(t, "", "")
			value := strings.ReplaceAll(tc.value, "DIR", p.Dir)
			if out, err := exec.Command(p.path("postconf"), "-c", p.Dir, "-P", tc.service+"/transport_maps="+value).CombinedOutput(); err != nil {
				t.Fatalf("%v: %s", err, out)
			}
			before := snapshot(t, p.Dir)
			_, err := Setup(context.Background(), p, statePath(p), options(p), false)
			var conflict *ConflictError
			switch {
			case tc.refused && (!errors.As(err, &conflict) || !strings.Contains(err.Error(), "master.cf's service "+tc.service+" (trivial-rewrite) sets its own transport_maps = "+value)):
				t.Fatalf("got %v, want a refusal", err)
			case tc.refused:
				sameFiles(t, p.Dir, before)
			case err != nil:
				t.Fatalf("setup: %v", err)
			}
		})
	}
}

// A second run without --prepend-transport-maps after a setup that was
// given it: onionmx's tables stay before the administrator's, nothing
// changes, nothing is refused.
func TestSetupAgainWithoutPrepend(t *testing.T) {
	t.Parallel()
	p := newConfig(t, "transport_maps = hash:/etc/postfix/transport\n", "")
	o := options(p)
	o.PrependTransportMaps = true
	setup(t, p, o)
	after := snapshot(t, p.Dir)
	if res := setup(t, p, options(p)); len(res.Changes) != 0 {
		t.Errorf("changes %v", res.Changes)
	}
	sameFiles(t, p.Dir, after)
}

// A transport_maps the administrator extended after setup, onionmx's
// tables still first: removal takes out onionmx's two tables and keeps
// the rest, their change included, instead of refusing (whose by-hand
// commands would put back the value from before setup, and lose it).
func TestRemoveKeepsTablesAddedAfter(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ name, mainCF, want string }{
		{"prepended", "transport_maps = hash:/etc/postfix/transport\n", "hash:/etc/postfix/transport, hash:/etc/postfix/new"},
		{"alone", "", "hash:/etc/postfix/new"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			p := newConfig(t, tc.mainCF, "")
			o := options(p)
			o.PrependTransportMaps = true
			setup(t, p, o)
			now := paramOf(t, p, "transport_maps") + ", hash:/etc/postfix/new"
			if out, err := exec.Command(p.path("postconf"), "-c", p.Dir, "-e", "transport_maps = "+now).CombinedOutput(); err != nil {
				t.Fatalf("%v: %s", err, out)
			}
			remove(t, p)
			if got := paramOf(t, p, "transport_maps"); got != tc.want {
				t.Errorf("transport_maps = %q, want %q", got, tc.want)
			}
		})
	}
	// onionmx's tables no longer first: refused as before.
	p := newConfig(t, "", "")
	setup(t, p, options(p))
	now := "hash:/etc/postfix/new, " + paramOf(t, p, "transport_maps")
	if out, err := exec.Command(p.path("postconf"), "-c", p.Dir, "-e", "transport_maps = "+now).CombinedOutput(); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	var ce *ChangedError
	if _, err := Remove(context.Background(), p, statePath(p), false); !errors.As(err, &ce) {
		t.Errorf("got %v, want a ChangedError", err)
	}
}
