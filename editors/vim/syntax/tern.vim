" Vim syntax file
" Language:  Tern (compiler/src/lexer.rs)
" Files:     *.tern
"
" The `syn keyword` lines are every keyword of the lexer (KEYWORDS in lexer.rs) and
" nothing else, and ternBuiltin names the standard library's natives: the test
" compiler/tests/editors.rs checks both.

if exists('b:current_syntax')
  finish
endif

let s:cpo_save = &cpo
set cpo&vim

" Names are ASCII letters, digits and `_` (Vim's \w and \h are ASCII too).
syn iskeyword a-z,A-Z,48-57,_
syn case match

" Keywords.
syn keyword ternStorage      let fn
syn keyword ternConditional  if else
syn keyword ternRepeat       while for in
syn keyword ternStatement    break continue return
syn keyword ternException    try catch
syn keyword ternInclude      import as
syn keyword ternOperatorWord and or not
syn keyword ternNil          nil
syn keyword ternBoolean      true false

" Function names where defined, and the natives of the standard library where called
" (not after `.`: `m.get(k)` calls a field).
syn match ternFunction "\%(\<fn\s\+\)\@<=\h\w*"
syn match ternBuiltin "\%(\.\s*\)\@<!\<\%(print\|println\|to_string\|type_of\|int\|float\|parse_int\|parse_float\|error\|assert\|split\|join\|find\|replace\|trim\|upper\|lower\|chars\|starts_with\|ends_with\|repeat\|format\|to_fixed\|ord\|chr\|abs\|min\|max\|sqrt\|pow\|floor\|ceil\|round\|sin\|cos\|tan\|atan\|atan2\|exp\|ln\|log10\|pi\|is_nan\|len\|push\|pop\|insert\|remove\|slice\|sort\|reverse\|index_of\|contains\|array\|keys\|values\|has\|get\|mono_ms\|mono_us\|wall_ms\|rand_seed\|rand_int\|rand_float\|spawn\|spawn_on\|migrate\|group\|my_group\|pin\|migrate_group\|nodes\|self\|node\|send\|recv\|select\|sleep\|channel\|exit\|kill\|link\|monitor\|trap_exits\|open\|read\|read_line\|write\|seek\|close\|is_timeout\|pid\)\ze\s*("

" Operators; `&&`, `||` and `!` alone are not Tern's (it says `and`, `or`, `not`).
syn match ternOperator "[-+*/%=<>&|^~]\|!="
syn match ternOperatorError "&&\|||\|!=\@!"

" Any character that starts no token.
syn match ternError '[^A-Za-z0-9_ \t\r\n"()[\]{},;:.=<>+*/%^~&|!-]'

" Numbers: decimal and hexadecimal integers, floats. A literal run into letters or digits
" (`123abc`, `0xfg`, `1e`), `0x` without digits and integers above i64::MAX are errors.
syn match ternNumber "\w\@1<![0-9][0-9_]*\w\@!"
syn match ternNumber "\w\@1<!0[xX][0-9a-fA-F_]\+\w\@!"
syn match ternFloat "\w\@1<![0-9][0-9_]*\%(\.[0-9][0-9_]*\%([eE][+-]\=[0-9][0-9_]*\)\=\|[eE][+-]\=[0-9][0-9_]*\)\w\@!"
syn match ternNumberError "\w\@1<!\%(0[xX][0-9a-fA-F_]*\|[0-9][0-9_]*\%(\.[0-9][0-9_]*\)\=\%([eE][+-]\=[0-9][0-9_]*\)\=\)\@>[A-Za-z0-9_]\+"
syn match ternNumberError "\w\@1<!0[xX]_*\w\@!"
syn match ternNumberError "\w\@1<!0[xX]\%([0_]*\)\@>\%([1-9a-fA-F]\%(_*[0-9a-fA-F]\)\{16,}\|[89a-fA-F]\%(_*[0-9a-fA-F]\)\{15}\)_*\w\@!"
syn match ternNumberError "\w\@1<!\d\@=\%([0_]*\)\@>\%([1-9]\%(_*[0-9]\)\{19,}\|9_*\%([3-9]\%(_*[0-9]\)\{17}\|2_*\%([3-9]\%(_*[0-9]\)\{16}\|2_*\%([4-9]\%(_*[0-9]\)\{15}\|3_*\%([4-9]\%(_*[0-9]\)\{14}\|3_*\%([8-9]\%(_*[0-9]\)\{13}\|7_*\%([3-9]\%(_*[0-9]\)\{12}\|2_*\%([1-9]\%(_*[0-9]\)\{11}\|0_*\%([4-9]\%(_*[0-9]\)\{10}\|3_*\%([7-9]\%(_*[0-9]\)\{9}\|6_*\%(9\%(_*[0-9]\)\{8}\|8_*\%([6-9]\%(_*[0-9]\)\{7}\|5_*\%([5-9]\%(_*[0-9]\)\{6}\|4_*\%([8-9]\%(_*[0-9]\)\{5}\|7_*\%([8-9]\%(_*[0-9]\)\{4}\|7_*\%([6-9]\%(_*[0-9]\)\{3}\|5_*\%(9\%(_*[0-9]\)\{2}\|8_*\%([1-9]\%(_*[0-9]\)\{1}\|0_*[8-9]\)\)\)\)\)\)\)\)\)\)\)\)\)\)\)\)\)\)_*\w\@!"

" Strings: escapes \n \t \r \0 \\ \" \$ \u{1 to 6 hex digits}; `${...}` holds code, in which
" braces nest.
syn region ternString matchgroup=ternQuote start=+"+ skip=+\\\\\|\\"+ end=+"+ contains=ternEscapeError,ternEscape,ternInterp,@Spell
syn match ternEscapeError contained +\\\_.+
syn match ternEscapeError contained +\\u\%({\x*}\=\)\=+
syn match ternEscape contained +\\[ntr0\\"$]+
syn match ternEscape contained +\\u{\%(0*[dD][89a-fA-F]\x\x}\)\@!\%(\x\{1,5}\|0\x\{5}\|10\x\{4}\)}+
" Code inside `${...}`: every item but the string's own.
syn cluster ternCode contains=ALLBUT,ternInterp,ternEscape,ternEscapeError,ternTodo
syn region ternInterp contained matchgroup=ternInterpDelim start=+\${+ end=+}+ contains=@ternCode
syn region ternBraces contained transparent start=+{+ end=+}+ contains=@ternCode

" Comments (after the rest: `//` wins over `/`).
syn match ternTodo contained "\<\%(TODO\|FIXME\|XXX\)\>"
syn match ternComment "//.*$" contains=ternTodo,@Spell

" Strings span lines: parse from the top, or a line inside one would not know it.
syn sync fromstart

hi def link ternStorage       Keyword
hi def link ternConditional   Conditional
hi def link ternRepeat        Repeat
hi def link ternStatement     Statement
hi def link ternException     Exception
hi def link ternInclude       Include
hi def link ternOperatorWord  Keyword
hi def link ternNil           Constant
hi def link ternBoolean       Boolean
hi def link ternFunction      Function
hi def link ternBuiltin       Function
hi def link ternOperator      Operator
hi def link ternOperatorError Error
hi def link ternError         Error
hi def link ternNumber        Number
hi def link ternFloat         Float
hi def link ternNumberError   Error
hi def link ternString        String
hi def link ternQuote         String
hi def link ternEscape        SpecialChar
hi def link ternEscapeError   Error
hi def link ternInterpDelim   Delimiter
hi def link ternTodo          Todo
hi def link ternComment       Comment

let b:current_syntax = 'tern'

let &cpo = s:cpo_save
unlet s:cpo_save
