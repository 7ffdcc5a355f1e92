package postfixsetup

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/onionmx/onionmx/lookup"
	"github.com/onionmx/onionmx/tor"
)

// A Finding is the result of one check: OK, a Problem the administrator
// should fix, or not checked (Skipped), with what to do.
type Finding struct {
	Problem, Skipped bool
	Text             string
}

func (f Finding) String() string {
	switch {
	case f.Problem:
		return "problem: " + f.Text
	case f.Skipped:
		return "not checked: " + f.Text
	}
	return "ok: " + f.Text
}

// probeWait bounds each question to the SocksPort. Tor answers both from
// memory, without building a circuit.
const probeWait = 5 * time.Second

// BadOnion is a v3-shaped onion name whose checksum is wrong: Tor refuses
// it before any circuit, with reply F6 when the SocksPort has
// ExtendedErrors and with the general failure (01) when it has not. So a
// CONNECT to it tells which, with nothing sent anywhere.
const BadOnion = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaad.onion"

// CheckTor asks the SocksPort whether it speaks SOCKS5, and whether it has
// ExtendedErrors; if not, it gives the torrc line.
func CheckTor(ctx context.Context, d *tor.SOCKSDialer) []Finding {
	if err := d.Probe(ctx, probeWait); err != nil {
		return []Finding{{Problem: true, Text: err.Error() + " (is Tor running, and is this its SocksPort? onionmx defers all mail until it answers)"}}
	}
	found := []Finding{{Text: fmt.Sprintf("Tor SocksPort %s answers SOCKS5", d)}}
	ctx, cancel := context.WithTimeout(ctx, probeWait)
	defer cancel()
	conn, err := d.DialContext(ctx, "tcp", BadOnion+":25")
	if err == nil {
		conn.Close()
		return append(found, Finding{Problem: true, Text: fmt.Sprintf("%s connected to an invalid onion address: it is not Tor's SocksPort", d)})
	}
	ce := tor.Classify(d.String(), BadOnion+":25", err, ctx.Err())
	switch {
	case ce.Kind == tor.BadAddress:
		return append(found, Finding{Text: "ExtendedErrors is on (Tor said why it refused an invalid onion address)"})
	case ce.Reply != 0:
		return append(found, Finding{Problem: true, Text: fmt.Sprintf("ExtendedErrors is off (Tor answered an invalid onion address with %s, not F6): without it onionmx cannot tell why an onion failed; in torrc: SocksPort %s ExtendedErrors, then reload Tor", ce.Reply, torrcAddr(d))})
	}
	return append(found, Finding{Skipped: true, Text: fmt.Sprintf("ExtendedErrors: %v", ce)})
}

// torrcAddr is the SocksPort as torrc writes it.
func torrcAddr(d *tor.SOCKSDialer) string {
	if d.Network == "unix" {
		return "unix:" + d.Addr
	}
	return d.Addr
}

// LookupKey is the address the lookup service is asked for: one at a valid
// onion, which it answers from the name alone, without DNS or Tor.
func LookupKey() (key, onion string) {
	onion = lookup.OnionFromKey(make([]byte, 32))
	return "postmaster@" + onion, onion
}

// reloadSettle is how long CheckLookup asks again after a reload: postfix
// reload only signals the master, which reads master.cf again in its own
// time, and until then the new lookup service does not answer.
const reloadSettle = 10 * time.Second

// CheckLookup asks the lookup service through Postfix, as trivial-rewrite
// does (postmap -q from the queue directory), when the instance runs.
// After a reload (reloaded), it asks again for a while until the answer
// is right.
func CheckLookup(ctx context.Context, p *Postfix, service string, reloaded bool) Finding {
	deadline := time.Now().Add(reloadSettle)
	var queue string // asked of postconf once, not on every try
	for {
		f := checkLookup(ctx, p, service, &queue)
		if !f.Problem || !reloaded || time.Now().After(deadline) {
			return f
		}
		select {
		case <-ctx.Done():
			return f
		case <-time.After(500 * time.Millisecond):
		}
	}
}

// checkLookup asks once. queue is the queue directory, "" until the
// first try that needs it asks postconf.
func checkLookup(ctx context.Context, p *Postfix, service string, queue *string) Finding {
	key, onion := LookupKey()
	table := "socketmap:unix:private/" + LookupService(service) + ":" + service
	cmd := ShellQuote(p.command("postmap", "-q", key, table))
	if !p.Running(ctx) {
		return Finding{Skipped: true, Text: fmt.Sprintf("the lookup service: Postfix (%s) is not running; once it is: cd $(postconf -c %s -h queue_directory) && %s", p.Dir, quote(p.Dir), cmd)}
	}
	if *queue == "" {
		dir, err := p.Effective(ctx, "queue_directory")
		if err != nil {
			return Finding{Problem: true, Text: err.Error()}
		}
		*queue = dir
	}
	want := service + ":[" + onion + "]:25"
	got, found, err := p.Query(ctx, *queue, key, table)
	var ce *CommandError
	switch {
	case errors.As(err, &ce):
		return Finding{Problem: true, Text: fmt.Sprintf("the lookup service does not answer through Postfix: %s (see the mail log)", strings.Join(strings.Fields(ce.Output), " "))}
	case err != nil:
		return Finding{Problem: true, Text: err.Error()}
	case !found:
		return Finding{Problem: true, Text: fmt.Sprintf("the lookup service answers %s with no route: (%s)", key, cmd)}
	case got != want:
		return Finding{Problem: true, Text: fmt.Sprintf("the lookup service answers %s with %q, not %q", key, got, want)}
	}
	return Finding{Text: fmt.Sprintf("the lookup service answers through Postfix: %s -> %s", key, got)}
}

// CheckSocketAccess says whether account may connect to the unix socket
// path, as the services will, running as that account while setup runs
// as root: connect(2) needs write permission on the socket and search
// permission on each directory above it. Debian's /run/tor/socks is
// debian-tor's, mode 0660: the account must be in that group.
func CheckSocketAccess(path, account string) Finding {
	u, err := user.Lookup(account)
	if err != nil {
		return Finding{Skipped: true, Text: fmt.Sprintf("whether %s may open %s: %v", account, path, err)}
	}
	uid, gids := ids(u)
	if dir, fi, err := blockedDir(path, uid, gids); dir != "" {
		return Finding{Problem: true, Text: fmt.Sprintf("user %s may not reach %s: the directory %s %s", account, path, dir, describe(fi, err))}
	}
	fi, err := os.Stat(path)
	if err != nil {
		return Finding{Problem: true, Text: fmt.Sprintf("user %s may not open %s: %v", account, path, err)}
	}
	if !allowed(fi, uid, gids, 2) {
		hint := ""
		if st, ok := fi.Sys().(*syscall.Stat_t); ok && fi.Mode().Perm()&0o020 != 0 {
			group := strconv.Itoa(int(st.Gid))
			if g, err := user.LookupGroupId(group); err == nil {
				group = g.Name
			}
			hint = fmt.Sprintf(": add it to the socket's group (adduser %s %s), then restart Postfix", account, group)
		}
		return Finding{Problem: true, Text: fmt.Sprintf("user %s may not open %s (%s)%s", account, path, describe(fi, nil), hint)}
	}
	return Finding{Text: fmt.Sprintf("user %s may open %s", account, path)}
}

// CheckRun returns an error unless account may run the program at path,
// as pipe(8) and spawn(8) will, running as that account while setup runs
// as root: execute permission on the file and search permission on each
// directory above it. A program the pipe service cannot run bounces
// every message it is given (pipe(8): "Command died with status 1"), so
// setup refuses it. A newcomer's own build under /root, which only root
// may enter, is the usual case.
func CheckRun(path, account string) error {
	return checkAccess(path, account, 1, "run", "install onionmx where every user may run it, as /usr/local/bin")
}

// CheckRead returns an error unless account may read the file at path
// (if it exists; else reach the directory where it will be), as the
// lookup service, running as that account, must read the static map: a
// lookup that cannot answers TEMP for every domain, and Postfix then
// defers all mail, not only onion mail.
func CheckRead(path, account string) error {
	if _, err := os.Stat(path); errors.Is(err, os.ErrNotExist) {
		return checkAccess(filepath.Dir(path), account, 1, "reach", "the lookup service runs as that user: put the map where it may")
	}
	return checkAccess(path, account, 4, "read", "the lookup service runs as that user: put the map where it may")
}

// checkAccess checks the permission bit (1 execute or search, 4 read)
// of account on path and search on each directory above it.
func checkAccess(path, account string, bit os.FileMode, verb, hint string) error {
	u, err := user.Lookup(account)
	if err != nil {
		return err
	}
	uid, gids := ids(u)
	if dir, fi, err := blockedDir(path, uid, gids); dir != "" {
		return fmt.Errorf("user %s may not %s it: the directory %s is %s (%s)", account, verb, dir, describe(fi, err), hint)
	}
	fi, err := os.Stat(path)
	if err != nil {
		return err
	}
	if !allowed(fi, uid, gids, bit) {
		return fmt.Errorf("user %s may not %s it: it is %s (%s)", account, verb, describe(fi, nil), hint)
	}
	return nil
}

// blockedDir is the first directory above path, from the nearest, that
// uid with the groups gids may not search, with what os.Stat said of it;
// "" when it may search them all.
func blockedDir(path string, uid int, gids []int) (dir string, fi os.FileInfo, statErr error) {
	for dir := filepath.Dir(path); ; dir = filepath.Dir(dir) {
		if fi, err := os.Stat(dir); err != nil || !allowed(fi, uid, gids, 1) {
			return dir, fi, err
		}
		if dir == "/" || dir == "." {
			return "", nil, nil
		}
	}
}

// ids are the numeric user id and group ids of an account.
func ids(u *user.User) (uid int, gids []int) {
	uid, _ = strconv.Atoi(u.Uid)
	names, _ := u.GroupIds()
	for _, g := range names {
		if id, err := strconv.Atoi(g); err == nil {
			gids = append(gids, id)
		}
	}
	return uid, gids
}

// allowed reports whether uid with the groups gids has the permission
// bit (1 search, 2 write, 4 read) on the file, as the kernel decides:
// owner, else group, else others.
func allowed(fi os.FileInfo, uid int, gids []int, bit os.FileMode) bool {
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok || uid == 0 {
		return true
	}
	mode := fi.Mode().Perm()
	switch {
	case int(st.Uid) == uid:
		return mode&(bit<<6) != 0
	case slices.Contains(gids, int(st.Gid)):
		return mode&(bit<<3) != 0
	}
	return mode&bit != 0
}

// describe shows a file's mode and owners, as ls -l does.
func describe(fi os.FileInfo, err error) string {
	if err != nil {
		return err.Error()
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return fi.Mode().String()
	}
	owner, group := strconv.Itoa(int(st.Uid)), strconv.Itoa(int(st.Gid))
	if u, err := user.LookupId(owner); err == nil {
		owner = u.Username
	}
	if g, err := user.LookupGroupId(group); err == nil {
		group = g.Name
	}
	return fmt.Sprintf("%s %s:%s", fi.Mode(), owner, group)
}
