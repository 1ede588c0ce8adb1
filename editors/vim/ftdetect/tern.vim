" Tern source files.
autocmd BufRead,BufNewFile *.tern setfiletype tern
