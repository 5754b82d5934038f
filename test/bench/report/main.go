// Command report turns the measurements bench.sh records into its markdown
// report: the arithmetic (seconds, MiB, MB, ratios) and the layout live here,
// where they are unit-tested; bench.sh only runs and times the tools.
//
//	report render FILE     the report of the measurements in FILE, on stdout
//	report cell FILE KEY   one figure with its unit, as the report shows it
//	                       (for bench.sh's progress lines), e.g. lifeboat.full.s
//
// FILE has one "KEY<TAB>VALUE" line per measurement (see Figures).
package main

import (
	"fmt"
	"os"
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "report:", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	switch {
	case len(args) == 2 && args[0] == "render":
	case len(args) == 3 && args[0] == "cell":
	default:
		return fmt.Errorf("usage: report render FILE | report cell FILE KEY")
	}
	file, err := os.Open(args[1])
	if err != nil {
		return err
	}
	defer file.Close()
	f, err := Parse(file)
	if err != nil {
		return fmt.Errorf("%s: %w", args[1], err)
	}
	if args[0] == "cell" {
		_, err = fmt.Println(f.Cell(args[2]))
		return err
	}
	return Render(os.Stdout, f)
}
