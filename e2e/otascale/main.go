package main

import (
	"fmt"
	"os"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: otascale run [flags] | otascale sim [flags]")
		os.Exit(2)
	}
	var err error
	switch os.Args[1] {
	case "run":
		err = runBench(os.Args[2:])
	case "sim":
		err = runSim(os.Args[2:])
	default:
		err = fmt.Errorf("unknown command %q: want run or sim", os.Args[1])
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "otascale:", err)
		os.Exit(1)
	}
}

// phase prints one line of the benchmark's progress on stderr.
func phase(format string, a ...any) { fmt.Fprintf(os.Stderr, "otascale: "+format+"\n", a...) }
