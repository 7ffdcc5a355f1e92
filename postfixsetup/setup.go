// Package postfixsetup wires onionmx into an existing Postfix, and out of
// it again, with Postfix's own commands: postconf -M and -MX for the two
// master.cf services, postconf -e and -X for the main.cf parameters,
// postmap for the empty static map. It never edits main.cf or master.cf
// as text, with one exception that --remove makes only when it is provably
// right (Remove).
//
// Setup, in order:
//
//  1. Lock the configuration directory (flock on the directory itself,
//     so that two runs never interleave their postconf calls), read the
//     state file of an earlier setup, if any.
//  2. Refuse what postconf would get wrong: a main.cf or master.cf whose
//     last line has no line end (postconf -e and -M append to that line),
//     or that is a symbolic link (postconf replaces it); and a
//     trivial-rewrite service with a transport_maps of its own, which
//     would never ask onionmx's tables.
//  3. Plan: for each setting, compare what main.cf and master.cf have
//     with what onionmx needs. Equal: nothing to do. Set by an earlier
//     setup and unchanged since: updated. Absent: added. Anything else is
//     the administrator's and a conflict, refused, except an existing
//     transport_maps with PrependTransportMaps: onionmx's tables go first.
//  4. Unless it is a dry run, write the state file first (what was there
//     before each change, and a copy of both files) and again after each
//     change (the files' checksums), then make the changes: the static
//     map, the services, the parameters, so that every table main.cf
//     names exists when it names it.
//  5. Plan again: anything still to change means postconf did not do what
//     was asked, an error rather than a silent success.
//
// Remove undoes exactly what the state file says setup did, after making
// sure that each of those settings is still what setup left.
package postfixsetup

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
)

// Options are an administrator's choices. Setup fills in nothing: the
// command line gives every value.
type Options struct {
	Service string // the pipe service's name (transport); the lookup service is Service+"-lookup"
	User    string // user= of both services
	Binary  string // absolute path of the onionmx binary
	Map     string // the static map's text file
	// DeliverFlags and LookupFlags are the flags of onionmx deliver and
	// onionmx socketmap (--socks, --dns, --self, ...), in order.
	DeliverFlags []string
	LookupFlags  []string
	// PrependTransportMaps puts onionmx's tables before those of an
	// existing transport_maps instead of refusing to change it.
	PrependTransportMaps bool
}

// Values from Postfix's documentation and onionmx's README.
const (
	// TimeLimit is NAME_time_limit: Postfix kills (and bounces) a command
	// after it; onionmx defers by itself after its --timeout (10m).
	TimeLimit = "1000s"
	// exportEnvironment is Postfix's default export_environment plus
	// onionmx's EHLO name, which pipe(8) cannot put in argv, and
	// GOMAXPROCS=1 (one message needs one thread: BENCHMARKS.md).
	exportEnvironment = "TZ MAIL_CONFIG LANG ONIONMX_HELO=$myhostname GOMAXPROCS=1"
)

// LookupService is the spawn service of the pipe service name.
func LookupService(name string) string { return name + "-lookup" }

// Tables are the transport_maps entries onionmx needs, in order: the
// static map (of Postfix's default database type) for pinned domains, then
// the lookup service for every other domain.
func Tables(dbType, mapPath, service string) []string {
	return []string{
		dbType + ":" + mapPath,
		"socketmap:unix:private/" + LookupService(service) + ":" + service,
	}
}

// pipeEntry is the onionmx service as postconf -M prints it, fields
// separated by single spaces (compared field by field).
func pipeEntry(o *Options) string {
	argv := append([]string{o.Binary, "deliver"}, o.DeliverFlags...)
	argv = append(argv, "--size", "${size}", "-f", "${sender}", "--nexthop", "${nexthop}", "--", "${recipient}")
	return strings.Join([]string{o.Service, "unix - n n - - pipe",
		"-o {export_environment=" + exportEnvironment + "}",
		"flags=q null_sender= user=" + o.User,
		"argv=" + strings.Join(argv, " ")}, " ")
}

// lookupEntry is the lookup service: onionmx socketmap under spawn(8).
func lookupEntry(o *Options) string {
	argv := append([]string{o.Binary, "socketmap"}, o.LookupFlags...)
	return strings.Join([]string{LookupService(o.Service), "unix - n n - - spawn",
		"user=" + o.User, "argv=" + strings.Join(argv, " ")}, " ")
}

// ConflictError is a setting that the administrator made and setup would
// have to overwrite: refused.
type ConflictError struct {
	What string // "main.cf sets transport_maps = hash:/etc/postfix/transport"
	Hint string // what to do about it
}

func (e *ConflictError) Error() string { return e.What + ": " + e.Hint }

// A Change is one step of a setup or a removal: the command that makes it,
// as it is shown.
type Change struct {
	Argv []string
	// create is set for the step that creates the empty static map, which
	// is no Postfix command (install(1) says what it does).
	create string
}

func (c Change) String() string { return ShellQuote(c.Argv) }

// Result says what a run did or, dry, would do.
type Result struct {
	Changes []Change
	Notes   []string // things the administrator should know
}

// param is one main.cf parameter that setup manages.
type param struct {
	name, value string
}

// Setup plans the changes that wire onionmx into the Postfix of p.Dir and,
// unless dry, makes them. The state file is statePath.
func Setup(ctx context.Context, p *Postfix, statePath string, o *Options, dry bool) (*Result, error) {
	unlock, err := lockDir(p.Dir)
	if err != nil {
		return nil, err
	}
	defer unlock()
	if err := checkFiles(p.Dir); err != nil {
		return nil, err
	}
	st, err := readState(statePath)
	if err != nil {
		return nil, err
	}
	fresh := st == nil
	if fresh {
		st = &State{Dir: p.Dir}
	}
	if st.Dir != p.Dir {
		return nil, fmt.Errorf("%s is the state of a setup of %s, not of %s", statePath, st.Dir, p.Dir)
	}
	dbType, err := p.Effective(ctx, "default_database_type")
	if err != nil {
		return nil, err
	}
	// Another name or another map would leave the earlier setup's
	// services and files behind, unrecorded: that is --remove's to undo
	// first.
	table := dbType + ":" + o.Map
	if !fresh && (st.Service != o.Service || st.Map != nil && st.Map.Table != table) {
		return nil, &ConflictError{
			What: fmt.Sprintf("%s was set up with --service %s and the static map %s", p.Dir, st.Service, st.Map.tableOrNone()),
			Hint: "to change the service's name or the map, run onionmx setup postfix --remove first (a map with entries is kept)",
		}
	}
	if err := checkOverrides(ctx, p, Tables(dbType, o.Map, o.Service)); err != nil {
		return nil, err
	}
	st.Service = o.Service
	pl, err := planAll(ctx, p, st, o, table, dbType)
	if err != nil {
		return nil, err
	}
	changes := pl.changes
	res := &Result{Changes: changes}
	if dry || len(changes) == 0 {
		return res, nil
	}
	if fresh {
		if st.MainCF, err = os.ReadFile(filepath.Join(p.Dir, "main.cf")); err != nil {
			return nil, err
		}
		if st.MasterCF, err = os.ReadFile(filepath.Join(p.Dir, "master.cf")); err != nil {
			return nil, err
		}
	} else if err := st.dropEditedCopies(p.Dir); err != nil {
		return nil, err
	}
	st.Map, st.Services, st.Params = pl.mapState, pl.services, pl.params
	// Written before any change: a setup that fails half-way can still be
	// removed (Remove takes a setting that is still as it was before as
	// undone). And written again, with the files' checksums, after each
	// change: a setup interrupted half-way (^C, kill, a failing postconf)
	// and run again, or removed, still finds the files as setup left them
	// and keeps, or puts back, the copies taken before it.
	record := func() error {
		if err := st.recordAfter(p.Dir); err != nil {
			return err
		}
		return st.write(statePath)
	}
	if err := record(); err != nil {
		return nil, err
	}
	for i, c := range changes {
		if err := apply(ctx, p, c); err != nil {
			return nil, fmt.Errorf("%w (%d of %d changes made; onionmx setup postfix --remove undoes them)", err, i, len(changes))
		}
		if err := record(); err != nil {
			return nil, err
		}
	}
	// What postconf did is what was asked: planned again, nothing is
	// left to change.
	again, err := planAll(ctx, p, st, o, table, dbType)
	if err != nil {
		return nil, err
	}
	if len(again.changes) > 0 {
		return nil, fmt.Errorf("after the changes, %s still differs from what onionmx needs (%s): see postconf -c %s -n and -M", p.Dir, again.changes[0], p.Dir)
	}
	return res, nil
}

// setupPlan is what setup would change, and what the state file then says.
type setupPlan struct {
	changes          []Change
	mapState         *MapState
	services, params []Item
}

// planAll plans every setting (step 3 of the package comment's
// list), from st, the state of an earlier setup (empty if none).
func planAll(ctx context.Context, p *Postfix, st *State, o *Options, table, dbType string) (*setupPlan, error) {
	var changes []Change

	// The static map: created empty if it does not exist, and postmapped
	// when its database is missing or older than the text.
	mapState, mapChanges, err := planMap(p, table, o.Map, st.Map)
	if err != nil {
		return nil, err
	}
	changes = append(changes, mapChanges...)

	// The services, from one postconf -M.
	entries, err := p.Services(ctx)
	if err != nil {
		return nil, err
	}
	var services, params []Item
	for _, want := range []struct{ name, entry string }{
		{o.Service + "/unix", pipeEntry(o)},
		{LookupService(o.Service) + "/unix", lookupEntry(o)},
	} {
		entry := entries[want.name]
		cur := Value{Set: entry != "", Value: entry}
		it, after, err := plan(want.name, cur, st.service(want.name), sameEntry, func(base Value) (Value, error) {
			if base.Set && !sameEntry(base, Value{Set: true, Value: want.entry}) {
				return Value{}, &ConflictError{
					What: fmt.Sprintf("master.cf already has a service %s that onionmx setup did not make: %s", want.name, strings.Join(strings.Fields(base.Value), " ")),
					Hint: "choose another name with --service, or remove that service first (postconf -c " + p.Dir + " -MX " + want.name + ")",
				}
			}
			return Value{Set: true, Value: want.entry}, nil
		})
		if err != nil {
			return nil, err
		}
		if it != nil {
			services = append(services, *it)
		}
		if !sameEntry(cur, after) {
			changes = append(changes, setService(p, want.name, after))
		}
	}

	// The parameters, transport_maps last: when it names the lookup
	// service, the service is there.
	for _, want := range []param{
		{o.Service + "_destination_recipient_limit", "1"},
		{o.Service + "_time_limit", TimeLimit},
		{"transport_maps", ""},
	} {
		var cur Value
		if want.name == "transport_maps" {
			v, set, err := p.Param(ctx, want.name)
			if err != nil {
				return nil, err
			}
			cur = Value{Set: set, Value: v}
		} else if cur, err = p.MainParam(want.name); err != nil {
			return nil, err
		}
		prev := st.param(want.name)
		it, after, err := plan(want.name, cur, prev, equal, func(base Value) (Value, error) {
			if want.name == "transport_maps" {
				// An earlier setup that put onionmx's tables before the
				// administrator's was told to: a run without the flag
				// keeps them there rather than refuse its own setting.
				prepend := o.PrependTransportMaps || prev != nil && prev.After == cur && len(splitList(prev.Before.Value)) > 0
				return transportMaps(base, Tables(dbType, o.Map, o.Service), prepend)
			}
			return plainParam(want.name, base, want.value)
		})
		if err != nil {
			return nil, err
		}
		if it != nil {
			params = append(params, *it)
		}
		if after != cur {
			changes = append(changes, setParam(p, want.name, after))
		}
	}

	return &setupPlan{changes: changes, mapState: mapState, services: services, params: params}, nil
}

// plainParam plans a parameter that must have one value.
func plainParam(name string, base Value, want string) (Value, error) {
	if base.Set && base.Value != want {
		return Value{}, &ConflictError{
			What: fmt.Sprintf("main.cf sets %s = %s", name, base.Value),
			Hint: fmt.Sprintf("onionmx needs %s (see the README); change or remove that line first, or choose another service name with --service", want),
		}
	}
	return Value{Set: true, Value: want}, nil
}

// transportMaps plans transport_maps: onionmx's tables first.
func transportMaps(base Value, tables []string, prepend bool) (Value, error) {
	ours := strings.Join(tables, ", ")
	list := splitList(base.Value)
	switch {
	case !base.Set || len(list) == 0:
		return Value{Set: true, Value: ours}, nil
	case len(list) >= len(tables) && slices.Equal(list[:len(tables)], tables):
		return base, nil
	case slices.ContainsFunc(list, func(t string) bool { return slices.Contains(tables, t) }):
		return Value{}, &ConflictError{
			What: fmt.Sprintf("main.cf sets transport_maps = %s", base.Value),
			Hint: "it names onionmx's tables, but not first and in order (" + ours + "); fix that line by hand",
		}
	case prepend:
		return Value{Set: true, Value: ours + ", " + base.Value}, nil
	}
	return Value{}, &ConflictError{
		What: fmt.Sprintf("main.cf sets transport_maps = %s", base.Value),
		Hint: "onionmx's tables must come first (Postfix takes the first table's answer); --prepend-transport-maps puts them before these: a domain with an onion route then goes to onionmx even where these route it elsewhere, and every other domain falls through to these",
	}
}

// splitList splits a Postfix list value at commas and white space.
func splitList(s string) []string {
	return strings.FieldsFunc(s, func(r rune) bool { return r == ',' || r == ' ' || r == '\t' || r == '\n' || r == '\r' })
}

func setParam(p *Postfix, name string, v Value) Change {
	if !v.Set {
		return Change{Argv: p.command("postconf", "-X", name)}
	}
	return Change{Argv: p.command("postconf", "-e", name+" = "+v.Value)}
}

// setService sets or (v unset) removes a master.cf service.
func setService(p *Postfix, name string, v Value) Change {
	if !v.Set {
		return Change{Argv: p.command("postconf", "-MX", name)}
	}
	return Change{Argv: p.command("postconf", "-M", name+"="+v.Value)}
}

// sameEntry compares master.cf entries field by field: postconf -M pads
// the first fields with spaces.
func sameEntry(a, b Value) bool {
	return a.Set == b.Set && slices.Equal(strings.Fields(a.Value), strings.Fields(b.Value))
}

func equal(a, b Value) bool { return a == b }

// plan plans one setting, name, whose value is now cur; prev is what an earlier
// setup recorded for it. A value setup made and nobody changed since is
// planned from what was there before that setup (so that new options
// replace it); any other is the administrator's, which want may refuse to
// change (a ConflictError). The Item is what the state file keeps: nil
// when setup neither changed the setting nor had changed it before.
func plan(name string, cur Value, prev *Item, eq func(a, b Value) bool, want func(base Value) (Value, error)) (*Item, Value, error) {
	ours := prev != nil && eq(cur, prev.After)
	base := cur
	if ours {
		base = prev.Before
	}
	after, err := want(base)
	if err != nil {
		return nil, Value{}, err
	}
	if eq(after, base) && !ours {
		return nil, cur, nil // the administrator's, and already right
	}
	if eq(after, cur) {
		after = cur // keep the text postconf printed
	}
	return &Item{Name: name, Before: base, After: after}, after, nil
}

// planMap plans the static map: the text file created empty when missing,
// then postmap when its database is missing or older than the text.
func planMap(p *Postfix, table, path string, prev *MapState) (*MapState, []Change, error) {
	ms := &MapState{Table: table}
	if prev != nil && prev.Table == table {
		ms = prev
	}
	var changes []Change
	if _, err := os.Stat(path); errors.Is(err, os.ErrNotExist) {
		if _, err := os.Stat(filepath.Dir(path)); err != nil {
			return nil, nil, fmt.Errorf("static map %s: %w", path, err)
		}
		ms.CreatedText = true
		changes = append(changes, Change{Argv: []string{"install", "-m", "0644", "/dev/null", path}, create: path})
	} else if err != nil {
		return nil, nil, fmt.Errorf("static map %s: %w", path, err)
	}
	dbs := dbFiles(table)
	if dbs == nil {
		return nil, nil, fmt.Errorf("default_database_type %s: not a type onionmx setup knows the files of (hash, btree, lmdb, cdb, dbm, sdbm)", strings.TrimSuffix(table, ":"+path))
	}
	if stale(path, dbs) {
		if !exists(dbs[0]) && (prev == nil || prev.Table != table) {
			ms.CreatedDB = true
		}
		changes = append(changes, Change{Argv: p.command("postmap", table)})
	}
	return ms, changes, nil
}

// dbFiles are the files postmap makes of a table: nil for a type this
// does not know.
func dbFiles(table string) []string {
	typ, path, _ := strings.Cut(table, ":")
	switch typ {
	case "hash", "btree":
		return []string{path + ".db"}
	case "lmdb":
		return []string{path + ".lmdb"}
	case "cdb":
		return []string{path + ".cdb"}
	case "dbm", "sdbm":
		return []string{path + ".dir", path + ".pag"}
	}
	return nil
}

// stale reports whether the map's database is missing or older than its
// text (a missing text is about to be created).
func stale(text string, dbs []string) bool {
	ti, err := os.Stat(text)
	if err != nil {
		return true
	}
	for _, db := range dbs {
		di, err := os.Stat(db)
		if err != nil || di.ModTime().Before(ti.ModTime()) {
			return true
		}
	}
	return false
}

func exists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}

// apply makes one change.
func apply(ctx context.Context, p *Postfix, c Change) error {
	if c.create != "" {
		f, err := os.OpenFile(c.create, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
		if err != nil {
			return err
		}
		return f.Close()
	}
	return p.Exec(ctx, c.Argv)
}

// checkOverrides refuses a trivial-rewrite service in master.cf that sets
// its own transport_maps (-o transport_maps=...) without onionmx's tables
// first: that service, Postfix's address resolver, would never ask them,
// and onionmx's main.cf line would look right and route nothing.
func checkOverrides(ctx context.Context, p *Postfix, tables []string) error {
	values, commands, err := p.Overrides(ctx, "transport_maps")
	if err != nil {
		return err
	}
	for _, svc := range slices.Sorted(maps.Keys(values)) {
		list := splitList(values[svc])
		if commands[svc] != "trivial-rewrite" || len(list) >= len(tables) && slices.Equal(list[:len(tables)], tables) {
			continue
		}
		return &ConflictError{
			What: fmt.Sprintf("master.cf's service %s (trivial-rewrite) sets its own transport_maps = %s", svc, values[svc]),
			Hint: fmt.Sprintf("it resolves addresses with that instead of main.cf's, so it would never ask onionmx's tables; remove that -o (postconf -c %s -PX %s/transport_maps) or put %s first in it by hand", p.Dir, svc, strings.Join(tables, ", ")),
		}
	}
	return nil
}

// checkFiles refuses a main.cf or master.cf that postconf would damage:
// a symbolic link, which postconf replaces with a file of its own (the
// link's target, the file the administrator keeps, never sees the change,
// and removal cannot bring the link back); one whose last line has no line
// end: postconf -e and -M append their line to it, which then continues
// that last line ("hash:/bonionmx_...").
func checkFiles(dir string) error {
	for _, name := range []string{"main.cf", "master.cf"} {
		path := filepath.Join(dir, name)
		if fi, err := os.Lstat(path); err == nil && fi.Mode()&os.ModeSymlink != 0 {
			target, _ := os.Readlink(path)
			return &ConflictError{
				What: fmt.Sprintf("%s is a symbolic link (to %s)", path, target),
				Hint: "postconf would replace the link with a file and leave " + target + " as it is; make the changes by hand in the file it points to (see the README's manual steps), or replace the link by that file first",
			}
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return fmt.Errorf("not a Postfix configuration directory: %w", err)
		}
		if len(b) > 0 && b[len(b)-1] != '\n' {
			return &ConflictError{
				What: fmt.Sprintf("%s does not end with a line end", filepath.Join(dir, name)),
				Hint: "postconf would join onionmx's first line to its last one; add the line end (echo >> " + filepath.Join(dir, name) + ") first",
			}
		}
	}
	return nil
}
