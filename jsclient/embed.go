// Package jsclient embeds Convergo's browser client and demo app so that the
// Go binary serves them as-is: the library's ES modules under /convergo/ and
// the demo at /. The JavaScript itself lives beside this file (src/, demo/);
// see README.md in this folder.
package jsclient

import (
	"embed"
	"io/fs"
)

//go:embed src demo
var assets embed.FS

// Library returns the client library's ES modules (index.js, index.d.ts, ...).
func Library() fs.FS { return sub("src") }

// Demo returns the demo app's files (index.html, app.js, ...).
func Demo() fs.FS { return sub("demo") }

func sub(dir string) fs.FS {
	f, err := fs.Sub(assets, dir)
	if err != nil {
		panic(err) // unreachable: dir is embedded above
	}
	return f
}
