package postfixsetup

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
)

// ErrNotSetUp is a removal without a state file.
var ErrNotSetUp = errors.New("nothing to remove")

// ChangedError is a setting that setup made and someone changed since:
// Remove will not guess what to put back.
type ChangedError struct {
	File, Name  string
	Now, Set    Value
	StatePath   string
	UndoCommand string
}

func (e *ChangedError) Error() string {
	return fmt.Sprintf("%s: %s was changed after onionmx setup postfix set it: it is %s, setup made it %s; put it back, or undo onionmx's settings by hand (%s) and delete %s",
		e.File, e.Name, e.Now, e.Set, e.UndoCommand, e.StatePath)
}

// Remove undoes what the state file says Setup did, with postconf: each
// setting it changed goes back to its value before (postconf -e, -X, -M,
// -MX), and the static map's files go if setup created them and the map
// is still empty. It refuses, changing nothing, when one of those settings
// is no longer what setup left.
//
// postconf writes a parameter it sets on one line, so undoing a change to
// a parameter that was written otherwise (over continuation lines, without
// spaces around "=") leaves main.cf equivalent but not the same bytes. So
// at the end each file is compared with the copy taken before setup: when
// it differs and was, before the removal, exactly as setup left it (its
// checksum), nobody else changed it, and the copy is what it must be: it
// is put back. When someone did change it, the copy would undo their
// changes too: the file is left as postconf made it, and a note says so.
func Remove(ctx context.Context, p *Postfix, statePath string, dry bool) (*Result, error) {
	unlock, err := lockDir(p.Dir)
	if err != nil {
		return nil, err
	}
	defer unlock()
	st, err := readState(statePath)
	if err != nil {
		return nil, err
	}
	if st == nil {
		return nil, fmt.Errorf("%w: %s has no %s (onionmx setup postfix never ran there, or its state was deleted)", ErrNotSetUp, p.Dir, StateFile)
	}
	if st.Dir != p.Dir {
		return nil, fmt.Errorf("%s is the state of a setup of %s, not of %s", statePath, st.Dir, p.Dir)
	}
	mainPath, masterPath := filepath.Join(p.Dir, "main.cf"), filepath.Join(p.Dir, "master.cf")
	if err := checkFiles(p.Dir); err != nil {
		return nil, err
	}
	// Untouched since setup: taken before any change.
	mainSum, err := sum(mainPath)
	if err != nil {
		return nil, err
	}
	masterSum, err := sum(masterPath)
	if err != nil {
		return nil, err
	}
	mainUntouched := st.MainSum != nil && bytes.Equal(mainSum, st.MainSum)
	masterUntouched := st.MasterSum != nil && bytes.Equal(masterSum, st.MasterSum)

	res := &Result{}
	if err := checkQueue(ctx, p, res); err != nil {
		return nil, err
	}
	undo := undoCommands(p, st)
	// Parameters first, transport_maps before the services it names.
	for _, it := range slices.Backward(st.Params) {
		cur, err := p.MainParam(it.Name)
		if err != nil {
			return nil, err
		}
		if it.Name == "transport_maps" {
			v, set, err := p.Param(ctx, it.Name)
			if err != nil {
				return nil, err
			}
			cur = Value{Set: set, Value: v}
		}
		switch rest, ok := withoutOurs(it, cur); {
		case cur == it.Before:
			// Never changed (a setup that failed half-way), or put
			// back already.
		case cur == it.After:
			res.Changes = append(res.Changes, setParam(p, it.Name, it.Before))
		case ok:
			res.Changes = append(res.Changes, setParam(p, it.Name, rest))
		default:
			return nil, &ChangedError{File: mainPath, Name: it.Name, Now: cur, Set: it.After, StatePath: statePath, UndoCommand: undo}
		}
	}
	entries, err := p.Services(ctx)
	if err != nil {
		return nil, err
	}
	for _, it := range slices.Backward(st.Services) {
		entry := entries[it.Name]
		cur := Value{Set: entry != "", Value: entry}
		switch {
		case sameEntry(cur, it.Before):
		case sameEntry(cur, it.After):
			res.Changes = append(res.Changes, setService(p, it.Name, it.Before))
		default:
			return nil, &ChangedError{File: masterPath, Name: "service " + it.Name, Now: cur, Set: it.After, StatePath: statePath, UndoCommand: undo}
		}
	}
	var remove []string
	if m := st.Map; m != nil {
		_, path, _ := strings.Cut(m.Table, ":")
		empty := false
		if fi, err := os.Stat(path); err == nil && fi.Size() == 0 {
			empty = true
		}
		if m.CreatedDB && (empty || !exists(path)) {
			remove = append(remove, dbFiles(m.Table)...)
		}
		if m.CreatedText && empty {
			remove = append(remove, path)
		}
		if m.CreatedText && !empty && exists(path) {
			res.Notes = append(res.Notes, fmt.Sprintf("kept the static map %s: setup created it empty, and it has entries now", path))
		}
	}
	for _, f := range remove {
		if exists(f) {
			res.Changes = append(res.Changes, Change{Argv: []string{"rm", "--", f}})
		}
	}
	if dry {
		return res, nil
	}
	for _, c := range res.Changes {
		if c.Argv[0] == "rm" {
			if err := os.Remove(c.Argv[2]); err != nil {
				return nil, err
			}
			continue
		}
		if err := p.Exec(ctx, c.Argv); err != nil {
			return nil, err
		}
	}
	for _, f := range []struct {
		path      string
		before    []byte
		untouched bool
	}{{mainPath, st.MainCF, mainUntouched}, {masterPath, st.MasterCF, masterUntouched}} {
		now, err := os.ReadFile(f.path)
		if err != nil {
			return nil, err
		}
		switch {
		case f.before == nil:
			res.Notes = append(res.Notes, fmt.Sprintf("%s was changed between two setups, so there is no copy of it without onionmx's settings to compare with: onionmx's settings were undone with postconf and the rest left as it is now", f.path))
		case bytes.Equal(now, f.before):
		case f.untouched:
			if err := replaceFile(f.path, f.before); err != nil {
				return nil, err
			}
			res.Notes = append(res.Notes, fmt.Sprintf("put back %s as it was before setup: postconf writes a parameter on one line, and the line it restored was written otherwise", f.path))
		default:
			res.Notes = append(res.Notes, fmt.Sprintf("%s is not byte for byte what it was before setup: it was changed after setup too, so onionmx's settings were undone with postconf and the rest left as it is now", f.path))
		}
	}
	if err := os.Remove(statePath); err != nil {
		return nil, err
	}
	return res, nil
}

// withoutOurs is a transport_maps that the administrator changed after
// setup but that still starts with onionmx's two tables, as setup put
// them: the rest, which is theirs, and stays (putting back the value from
// before setup would undo their change). ok is false for any other.
func withoutOurs(it Item, cur Value) (rest Value, ok bool) {
	ours := splitList(it.After.Value)
	if it.Name != "transport_maps" || !cur.Set || len(ours) < 2 {
		return Value{}, false
	}
	prefix := strings.Join(ours[:2], ", ")
	tail, found := strings.CutPrefix(cur.Value, prefix)
	if !found || tail != "" && !strings.ContainsAny(tail[:1], ", \t") {
		return Value{}, false
	}
	if tail = strings.TrimLeft(tail, ", \t"); tail == "" {
		return Value{}, true
	}
	return Value{Set: true, Value: tail}, true
}

// undoCommands are the postconf commands that undo setup's settings,
// for a person who must do it by hand.
func undoCommands(p *Postfix, st *State) string {
	var cmds []string
	for _, it := range slices.Backward(st.Params) {
		cmds = append(cmds, setParam(p, it.Name, it.Before).String())
	}
	for _, it := range slices.Backward(st.Services) {
		cmds = append(cmds, setService(p, it.Name, it.Before).String())
	}
	return strings.Join(cmds, "; ")
}

// replaceFile writes b to path as the file it replaces was (its mode and
// owner), atomically, as postconf itself replaces main.cf.
func replaceFile(path string, b []byte) error {
	fi, err := os.Stat(path)
	if err != nil {
		return err
	}
	tmp := path + ".onionmx-tmp"
	if err := os.WriteFile(tmp, b, fi.Mode().Perm()); err != nil {
		return err
	}
	if err := os.Chmod(tmp, fi.Mode().Perm()); err != nil {
		os.Remove(tmp)
		return err
	}
	if err := chown(tmp, fi); err != nil {
		os.Remove(tmp)
		return err
	}
	return os.Rename(tmp, path)
}

// chown gives path the owner of the file fi describes.
func chown(path string, fi os.FileInfo) error {
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return nil
	}
	return os.Chown(path, int(st.Uid), int(st.Gid))
}
