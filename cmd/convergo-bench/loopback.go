package main

import (
	"os"
	"strconv"
	"strings"
)

// rpsPath is where Linux keeps the CPUs that process the loopback device's
// receives (receive packet steering). Empty (0), the default, leaves that
// work to the sending CPU.
const rpsPath = "/sys/class/net/lo/queues/rx-0/rps_cpus"

// loopbackNote names, for a scenario's title, the CPUs that process
// loopback receives when they are steered (scripts/bench.sh does so for a
// second set of fan-out rows). On loopback the kernel otherwise runs the
// receiving socket's TCP work in the sender's context: with every
// subscriber on the same machine, the server's core pays for its clients'
// receive processing, which remote clients' own machines pay. A title
// saying so keeps the two kinds of rows apart in the report.
func loopbackNote() string {
	b, err := os.ReadFile(rpsPath)
	if err != nil {
		return ""
	}
	cpus := maskCPUs(strings.TrimSpace(string(b)))
	if len(cpus) == 0 {
		return ""
	}
	word := "CPU "
	if len(cpus) > 1 {
		word = "CPUs "
	}
	return ", loopback receives steered to " + word + strings.Join(cpus, ",")
}

// maskCPUs lists the CPUs of a sysfs CPU mask: hexadecimal, most
// significant first, in comma-separated 32-bit words ("00000000,00000002").
// A mask it cannot read lists none.
func maskCPUs(mask string) []string {
	hex := strings.ReplaceAll(mask, ",", "")
	var cpus []string
	for i := len(hex) - 1; i >= 0; i-- {
		nibble, err := strconv.ParseUint(hex[i:i+1], 16, 8)
		if err != nil {
			return nil
		}
		for bit := range 4 {
			if nibble&(1<<bit) != 0 {
				cpus = append(cpus, strconv.Itoa((len(hex)-1-i)*4+bit))
			}
		}
	}
	return cpus
}
