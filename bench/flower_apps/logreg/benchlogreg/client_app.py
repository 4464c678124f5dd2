"""ClientApp: one local epoch of SGD on this node's partition; evaluation on the test set."""

from flwr.app import ArrayRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from benchlogreg.task import evaluate, fit, load

app = ClientApp()


def _partition(context: Context) -> str:
    return f"part{int(context.node_config['partition-id'])}"


@app.train()
def train(msg: Message, context: Context) -> Message:
    cfg = context.run_config
    x, y = load(str(cfg["data-dir"]), _partition(context))
    w, b = msg.content["arrays"].to_numpy_ndarrays()
    rnd = int(msg.content["config"]["server-round"])
    w, b = fit(
        w,
        b,
        x,
        y,
        float(cfg["learning-rate"]),
        int(cfg["batch-size"]),
        int(cfg["local-epochs"]),
        seed=rnd,
    )
    metrics = MetricRecord({"num-examples": len(x)})
    content = RecordDict({"arrays": ArrayRecord([w, b]), "metrics": metrics})
    return Message(content=content, reply_to=msg)


@app.evaluate()
def evaluate_fn(msg: Message, context: Context) -> Message:
    x, y = load(str(context.run_config["data-dir"]), "test")
    w, b = msg.content["arrays"].to_numpy_ndarrays()
    loss, accuracy = evaluate(w, b, x, y)
    metrics = MetricRecord({"loss": loss, "accuracy": accuracy, "num-examples": len(x)})
    return Message(content=RecordDict({"metrics": metrics}), reply_to=msg)
