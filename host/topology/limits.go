package topology

import (
	"fmt"

	"github.com/hashicorp/hcl/v2"
)

// Limits on a topology file, checked before HCL parses it: the HCL parser
// recurses once per nesting level, so a small file of deeply nested
// brackets would otherwise exhaust the stack (a 200 KB file of '[' takes
// about 1 GB and then a fatal stack overflow).
const (
	// MaxFileSize is the largest topology file read, in bytes. Real files
	// are a few KB.
	MaxFileSize = 1 << 20
	// MaxNesting is the deepest nesting of blocks, brackets, parentheses
	// and string interpolations. Real files nest fewer than 10 deep.
	MaxNesting = 100
)

// checkLimits reports a file over MaxFileSize or nested deeper than
// MaxNesting, with the position where the limit was crossed. It scans
// like HCL's lexer would for what matters here: comments and string
// contents do not nest, except ${...} and %{...} inside strings.
func checkLimits(filename string, src []byte) hcl.Diagnostics {
	if len(src) > MaxFileSize {
		return hcl.Diagnostics{{
			Severity: hcl.DiagError,
			Summary:  "Topology file too large",
			Detail:   fmt.Sprintf("The file is larger than %d bytes (1 MiB), the limit. Topology files declare nodes and their transports in a few KB; check that this is the file you meant.", MaxFileSize),
			Subject:  &hcl.Range{Filename: filename, Start: hcl.InitialPos, End: hcl.InitialPos},
		}}
	}
	const (
		code = iota
		str
		interp // code inside ${ } of a string
	)
	// stack holds what each open level is: a bracket in code, or an
	// interpolation (which returns to the string when closed).
	var stack []byte
	mode := []int{code}
	pos := hcl.Pos{Line: 1, Column: 1, Byte: 0}
	advance := func(n int) {
		for k := 0; k < n && pos.Byte < len(src); k++ {
			if src[pos.Byte] == '\n' {
				pos.Line++
				pos.Column = 1
			} else if src[pos.Byte]&0xC0 != 0x80 {
				pos.Column++
			}
			pos.Byte++
		}
	}
	tooDeep := func() hcl.Diagnostics {
		end := pos
		end.Byte++
		end.Column++
		return hcl.Diagnostics{{
			Severity: hcl.DiagError,
			Summary:  "Topology file nested too deeply",
			Detail:   fmt.Sprintf("Blocks, brackets and interpolations are nested more than %d deep here. Real topology files nest a few levels; check for unbalanced brackets.", MaxNesting),
			Subject:  &hcl.Range{Filename: filename, Start: pos, End: end},
		}}
	}
	for pos.Byte < len(src) {
		c := src[pos.Byte]
		var next byte
		if pos.Byte+1 < len(src) {
			next = src[pos.Byte+1]
		}
		switch mode[len(mode)-1] {
		case str:
			switch {
			case c == '\\':
				advance(2)
				continue
			case c == '"' || c == '\n':
				mode = mode[:len(mode)-1]
			case (c == '$' || c == '%') && next == '{':
				if len(stack) >= MaxNesting {
					return tooDeep()
				}
				stack = append(stack, '$')
				mode = append(mode, interp)
				advance(2)
				continue
			}
			advance(1)
			continue
		}
		switch {
		case c == '#' || c == '/' && next == '/':
			for pos.Byte < len(src) && src[pos.Byte] != '\n' {
				advance(1)
			}
			continue
		case c == '/' && next == '*':
			advance(2)
			for pos.Byte < len(src) && !(src[pos.Byte] == '*' && pos.Byte+1 < len(src) && src[pos.Byte+1] == '/') {
				advance(1)
			}
			advance(2)
			continue
		case c == '"':
			mode = append(mode, str)
		case c == '{' || c == '[' || c == '(':
			if len(stack) >= MaxNesting {
				return tooDeep()
			}
			stack = append(stack, c)
		case c == '}' || c == ']' || c == ')':
			if len(stack) > 0 {
				if stack[len(stack)-1] == '$' && c == '}' {
					mode = mode[:len(mode)-1] // back into the string
				}
				stack = stack[:len(stack)-1]
			}
		}
		advance(1)
	}
	return nil
}
