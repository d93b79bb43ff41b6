from retain.daemon.cli import app

app(prog_name="retain")
