"""``python3 -m chaosext.egress block|restore|status|run``: the fault without Chaos Toolkit."""
from chaosext.egress.cli import egress

egress(prog_name="python3 -m chaosext.egress")
