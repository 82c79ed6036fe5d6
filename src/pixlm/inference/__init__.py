"""Speed as swaps on the same modules, chosen by what the machine supports (see ``optimize``)."""
