package postfixsetup

import (
	"bytes"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
)

// StateFile is the state file's name in the configuration directory: it
// belongs to that Postfix instance, and an administrator who looks at the
// directory sees it.
const StateFile = "onionmx-setup.state"

// stateVersion changes when the format does; an unknown one is refused.
const stateVersion = 1

// State is what setup changed, so that Remove can undo exactly that. It is
// JSON, for people to read; the copies of the files are base64, to keep
// their bytes whatever they are.
type State struct {
	Version  int
	Dir      string
	Service  string    // --service
	Map      *MapState `json:",omitempty"`
	Services []Item    // master.cf, "name/type"
	Params   []Item    // main.cf
	// MainCF and MasterCF are the files as they were before the first
	// setup; MainSum and MasterSum the SHA-256 of the files as setup left
	// them, to tell whether anyone changed them since.
	MainCF, MasterCF   []byte
	MainSum, MasterSum []byte
}

// Item is one setting: its value before setup, and the one setup gave it.
type Item struct {
	Name          string
	Before, After Value
}

// Value is a setting's value, or its absence.
type Value struct {
	Set   bool
	Value string `json:",omitempty"`
}

func (v Value) String() string {
	if !v.Set {
		return "(not set)"
	}
	return v.Value
}

// MapState is the static map: which of its files setup created.
type MapState struct {
	Table                  string // "hash:/etc/postfix/onionmx_transport"
	CreatedText, CreatedDB bool
}

func (m *MapState) tableOrNone() string {
	if m == nil {
		return "(none)"
	}
	return m.Table
}

func (s *State) service(name string) *Item { return find(s.Services, name) }
func (s *State) param(name string) *Item   { return find(s.Params, name) }

func find(items []Item, name string) *Item {
	for i := range items {
		if items[i].Name == name {
			return &items[i]
		}
	}
	return nil
}

// readState reads the state file; nil without one.
func readState(path string) (*State, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var s State
	if err := json.Unmarshal(b, &s); err != nil {
		return nil, fmt.Errorf("state file %s: %w", path, err)
	}
	if s.Version != stateVersion {
		return nil, fmt.Errorf("state file %s: version %d, not %d (written by another onionmx)", path, s.Version, stateVersion)
	}
	return &s, nil
}

// write replaces the state file atomically: a crash leaves the old one or
// the new one, never half of one.
func (s *State) write(path string) error {
	s.Version = stateVersion
	b, err := json.MarshalIndent(s, "", "\t")
	if err != nil {
		return err
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, append(b, '\n'), 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

// recordAfter records the checksums of main.cf and master.cf as setup
// left them.
func (s *State) recordAfter(dir string) error {
	var err error
	if s.MainSum, err = sum(filepath.Join(dir, "main.cf")); err != nil {
		return err
	}
	s.MasterSum, err = sum(filepath.Join(dir, "master.cf"))
	return err
}

// dropEditedCopies forgets the copy of a file that someone changed since
// the last setup: it no longer is that file without onionmx's settings,
// and putting it back would undo their change.
func (s *State) dropEditedCopies(dir string) error {
	for _, f := range []struct {
		name      string
		copy, sum *[]byte
	}{{"main.cf", &s.MainCF, &s.MainSum}, {"master.cf", &s.MasterCF, &s.MasterSum}} {
		now, err := sum(filepath.Join(dir, f.name))
		if err != nil {
			return err
		}
		if !bytes.Equal(now, *f.sum) {
			*f.copy = nil
		}
	}
	return nil
}

func sum(path string) ([]byte, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	h := sha256.Sum256(b)
	return h[:], nil
}

// ErrBusy is another setup or removal running on the same directory.
var ErrBusy = errors.New("another onionmx setup postfix is changing this Postfix configuration; try again when it is done")

// lockDir takes an exclusive lock on the configuration directory itself:
// postconf replaces main.cf and master.cf by renaming, so a lock on a file
// would not hold across its changes, and a lock file would be one more
// file to leave behind.
func lockDir(dir string) (unlock func(), err error) {
	f, err := os.Open(dir)
	if err != nil {
		return nil, fmt.Errorf("configuration directory: %w", err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, fmt.Errorf("%s: %w", dir, ErrBusy)
		}
		return nil, fmt.Errorf("locking %s: %w", dir, err)
	}
	// Unlocked explicitly, not only by the close: a process forked for a
	// command in the meantime shares the open file, and with it the lock,
	// until it execs.
	return func() {
		syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
		f.Close()
	}, nil
}
