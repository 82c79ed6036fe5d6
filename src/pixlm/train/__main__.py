"""``python -m pixlm.train generator ...`` = ``pixlm train generator ...``; the form ``accelerate launch -m`` needs."""

from pixlm.cli import train_app

if __name__ == "__main__":
    train_app(prog_name="pixlm train")
