from dlmcli import run

run()
