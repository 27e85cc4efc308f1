module artgen.invalid/plugins/go-command

go 1.26
