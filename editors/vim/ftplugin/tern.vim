" Vim filetype plugin
" Language: Tern

if exists('b:did_ftplugin')
  finish
endif
let b:did_ftplugin = 1

" Line comments only: `//` to the end of the line.
setlocal commentstring=//\ %s
setlocal comments=://
setlocal formatoptions-=t formatoptions+=croql
" `import list;` names list.tern.
setlocal suffixesadd=.tern

let b:undo_ftplugin = 'setlocal commentstring< comments< formatoptions< suffixesadd<'
