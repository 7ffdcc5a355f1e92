// Command soak is the tool of e2e/soak.sh, the soak test: it makes and
// submits the messages, stands as an SMTP proxy in front of the receiver
// that can drop the reply to the end of data, watches every onionmx
// process and the long-running daemons, and checks what arrived.
//
//	soak submit  -ledger F -run ID -from I -to J -rate R -conf DIR -rcpts A,B,...
//	soak proxy   -listen ADDR -to ADDR -log F      (SIGUSR1: drop 3 more replies)
//	soak watch   -bin PATH -pids F -out F          (SIGUSR1: sample the daemons)
//	soak verify  -ledger F -run ID -mail DIR -sendlog F -bounces DIR -stops F ...
//
// It is a test tool, built and run by e2e/soak.sh only.
package main

import (
	"fmt"
	"os"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: soak submit|proxy|watch|verify [flags]")
		os.Exit(2)
	}
	var err error
	switch os.Args[1] {
	case "submit":
		err = submit(os.Args[2:])
	case "proxy":
		err = proxy(os.Args[2:])
	case "watch":
		err = watch(os.Args[2:])
	case "verify":
		err = verify(os.Args[2:])
	default:
		err = fmt.Errorf("unknown command %q", os.Args[1])
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "soak %s: %v\n", os.Args[1], err)
		os.Exit(1)
	}
}
