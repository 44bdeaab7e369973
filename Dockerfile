# One image for every orderfleet process: workers, beat, flower, migrations (docker-compose.yml).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app
# The repository root is the package `orderfleet` (pyproject.toml maps it to "."); the worker
# extra brings the fleet's libraries (the base install is the producer API alone).
COPY pyproject.toml README.md __init__.py celeryconfig.py ./
COPY models ./models
COPY tasks ./tasks
COPY worker ./worker
RUN pip install '.[worker]' && rm -rf build *.egg-info

# Celery refuses to be comfortable as root; beat keeps its schedule under the data dir.
RUN useradd --create-home --uid 10001 orderfleet
USER orderfleet
ENV ORDERFLEET_DATA_DIR=/home/orderfleet/data

CMD ["orderfleet", "--help"]
