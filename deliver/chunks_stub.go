package deliver

import (
	"bytes"
	"fmt"
	"io"
)

// TEMPORARY stand-in until the body branch lands: not for commit.
func writeChunks(w io.Writer, r io.Reader, commit func() bool, prefix []byte) (int, error) {
	var norm bytes.Buffer
	if err := writeBody(&norm, r, func() bool { return true }); err != nil {
		return 0, err
	}
	// undo the dot-stuffing and drop the final dot
	lines := bytes.SplitAfter(norm.Bytes()[:norm.Len()-3], []byte("\r\n"))
	var body bytes.Buffer
	for _, l := range lines {
		if bytes.HasPrefix(l, []byte("..")) {
			l = l[1:]
		}
		body.Write(l)
	}
	if !commit() {
		return 0, errNotCommitted
	}
	out := append(prefix, fmt.Sprintf("BDAT %d LAST\r\n", body.Len())...)
	out = append(out, body.Bytes()...)
	_, err := w.Write(out)
	return 1, err
}
