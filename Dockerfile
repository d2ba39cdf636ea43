FROM python:3.11-slim
WORKDIR /app
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
COPY pyproject.toml README.md ./
COPY src ./src
RUN pip install --no-cache-dir ".[redis]"
RUN useradd --create-home giftgraph
USER giftgraph
EXPOSE 8000
ENV GIFTGRAPH_HOST=0.0.0.0 GIFTGRAPH_PORT=8000
CMD ["sh", "-c", "giftgraph migrate && giftgraph serve"]
