"""REF (eejiarong/GAS baseline/CA2FL.py, baseline/FedBuff.py) loops, copied literally, on sklearn digits
with gas-jax's digits settings and a torch port of gas-jax's cnn_small: an outside check of
gas-jax's CA2FL and FedBuff (README, "Checks against the authors' code"). Needs PyTorch, which
gas-jax does not depend on; run it in a venv of its own:

    python3 -m venv /tmp/refvenv && /tmp/refvenv/bin/pip install torch numpy scikit-learn
    /tmp/refvenv/bin/python launch/ref_check/ref_ca2fl_fedbuff_digits.py ca2fl 0 --out ca2fl_s0.json

and compare with `python -m gas_jax.main --config=configs/digits.py --workdir=W
--config.algorithm=ca2fl --config.seed=0 --config.time.ref_constants=True` (summary.json).
Usage: ref_ca2fl_fedbuff_digits.py {ca2fl|fedbuff} SEED [--variant NAME] [--out FILE]"""
import argparse, copy, json, random, sys, time as _time
import numpy as np
import torch
import torch.nn as nn
import torch.utils.data as Data
import torch.utils.data.dataloader as dataloader

ap = argparse.ArgumentParser()
ap.add_argument("method", choices=["ca2fl", "fedbuff"])
ap.add_argument("seed", type=int)
ap.add_argument("--variant", default="ref")
ap.add_argument("--out", default="")
args = ap.parse_args()
torch.set_num_threads(1)
device = torch.device("cpu")

# Experimental parameter settings (gas-jax configs/digits.py)
iid = False
dirichlet = False
shard = 2
alpha = 0.1
epochs = 60
localEpoch = 10
user_num = 20
user_parti_num = 10
batchSize = 32
lr = 0.01
seed_value = args.seed
torch.manual_seed(seed_value)
np.random.seed(seed_value)
random.seed(seed_value)
Accu_Test_Frequency = 1
classOfLabel = 10
WRTT = True

# ---- data: as gas_jax/data/sources.py "digits" ----
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
digits = load_digits()
x = digits.data.astype(np.float64) / 16.0
y = digits.target
x_train, x_test, y_train, y_test = train_test_split(x, y, test_size=0.2, random_state=0, stratify=y)
mean, std = x_train.mean(), x_train.std()
prep = lambda a: ((a - mean) / std).reshape(-1, 1, 8, 8).astype(np.float32)   # NCHW
alldata, alllabel = prep(x_train), y_train.astype(np.int64)
test_set = Data.TensorDataset(torch.from_numpy(prep(x_test)), torch.from_numpy(y_test.astype(np.int64)))

class TrainSet(Data.Dataset):   # REF TrainSet without the PIL transform (data already normalised)
    def __init__(self, data, label, transform):
        self.data = data; self.label = label; self.transform = transform
    def __len__(self):
        return len(self.label)
    def __getitem__(self, item):
        return torch.from_numpy(self.data[item]), int(self.label[item])

def Data_Partition(iid, dirichlet, train_img, train_label, transform, user_num, batchSize, alpha=0.1,
                   shard=2, drop=True, classOfLabel=10):   # REF utils/dataset.py, shard branch
    users_data = []
    class_index = [[] for i in range(classOfLabel)]
    for i in range(len(train_label)):
        class_index[int(train_label[i])].append(i)
    if (shard * user_num) % classOfLabel != 0:
        print("Invalid Data Segmentation")
        interClassShardNum = 0
    else:
        interClassShardNum = int((shard * user_num) / classOfLabel)
    shard_index = [[] for i in range(classOfLabel * interClassShardNum)]
    for i in range(classOfLabel):
        shard_index_temp = np.random.permutation(class_index[i])
        nnj = np.size(shard_index_temp)
        for ii in range(interClassShardNum):
            shard_index[i * interClassShardNum + ii] = shard_index_temp[int(nnj / interClassShardNum)
                                                                        * ii: int(nnj / interClassShardNum) * (ii + 1)]
    order = np.arange(classOfLabel * interClassShardNum)
    np.random.shuffle(order)
    for i in range(user_num):
        local_data = None
        local_label = None
        for ii in range(shard):
            index_temp = shard_index[order[i * shard + ii]]
            if local_data is None:
                local_data = train_img[index_temp]
                local_label = train_label[index_temp]
            else:
                local_data = np.vstack([local_data, train_img[index_temp]])
                local_label = np.hstack([local_label, train_label[index_temp]])
        orderOfClient = np.random.permutation(local_data.shape[0])
        local_data = local_data[orderOfClient]
        local_label = local_label[orderOfClient]
        set = TrainSet(local_data, local_label, transform)
        loader = Data.DataLoader(dataset=set, batch_size=batchSize, shuffle=True, drop_last=drop)
        users_data.append(loader)
    return users_data

test_loader = dataloader.DataLoader(dataset=test_set, batch_size=128, shuffle=True)
train_index = np.arange(0, len(alldata))
random.shuffle(train_index)
train_img = np.array(alldata)[train_index]
train_label = np.array(alllabel)[train_index]
users_data = Data_Partition(iid, dirichlet, train_img, train_label, None,
                            user_num, batchSize, alpha, shard, drop=False, classOfLabel=classOfLabel)

# ---- model: torch port of gas_jax cnn_small (torch default init) ----
class CnnSmall(nn.Module):
    def __init__(self, num_classes=10):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 32, 3, padding=1)
        self.conv2 = nn.Conv2d(32, 64, 3, padding=1)
        self.conv3 = nn.Conv2d(64, 128, 3, padding=1)
        self.fc1 = nn.Linear(128 * 2 * 2, 256)
        self.fc2 = nn.Linear(256, num_classes)
        self.pool = nn.MaxPool2d(2, 2)
    def forward(self, x):
        x = torch.relu(self.conv1(x))
        x = torch.relu(self.pool(self.conv2(x)))
        x = self.pool(torch.relu(self.conv3(x)))
        x = torch.flatten(x, 1)
        x = torch.relu(self.fc1(x))
        return self.fc2(x)

model = CnnSmall()
model.to(device)
userParam = copy.deepcopy(model.state_dict())
optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, weight_decay=0.0005)
criterion = nn.CrossEntropyLoss()

def generate_computing(user_num):
    return np.random.uniform(10 ** 9, 10 ** 10, user_num)
def generate_position(user_num):
    return np.random.uniform(0.1, 1, user_num)
clients_computing = generate_computing(user_num)
clients_position = generate_position(user_num)
w = 10 ** 7
N = 3.981 * 10 ** (-21)
rates = []
for i in range(user_num):
    path_loss = 128.1 + 37.6 * np.log10(clients_position[i])
    h = 10 ** (-path_loss / 10)
    rates.append(w * np.log2(1 + (0.2 * h / (w * N))))

class Client:
    def __init__(self, user_data, local_epoch, gradient=None, minibatch=0, computing=0, rate=0, time=0):
        self.user_data = user_data
        self.dataloader_iter = iter(user_data)
        self.local_epoch = local_epoch
        self.count = 0
        self.iter_num = 0
        self.gradient = gradient
        self.minibatch = minibatch
        self.computing = computing
        self.rate = rate
        self.time = time
    def train_one_iteration(self):
        try:
            data = next(self.dataloader_iter)
        except StopIteration:
            self.dataloader_iter = iter(self.user_data)
            data = next(self.dataloader_iter)
        return data
    def model_process(self):
        workload = 69833728
        self.time += (workload / self.computing)
    def transmit_model(self):
        model_volume = 123799872
        self.time += (model_volume / self.rate)

def replace_user(order, k, user_num):
    available_users = set(range(user_num)) - set(order)
    new_user = np.random.choice(list(available_users))
    order[np.where(order == k)[0][0]] = new_user
    return order

def find_client_with_min_time(clients, order):
    min_time = float('inf')
    client_with_min_time = None
    for index in order:
        client = clients[index]
        if client.time < min_time:
            min_time = client.time
            client_with_min_time = index
    return client_with_min_time

def evaluate(params):
    model.eval()
    model.load_state_dict(params, strict=True)
    with torch.no_grad():
        correct = 0; total = 0
        for (images, labels) in test_loader:
            output = model(images)
            _, predicted = torch.max(output.data, 1)
            total += labels.size(0)
            correct += (predicted == labels).sum().item()
    return correct / total

def local_train(selected_client):
    for iteration in range(localEpoch):
        images, labels = clients[selected_client].train_one_iteration()
        final_output = model(images)
        loss = criterion(final_output, labels)
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(parameters=model.parameters(), max_norm=10)
        optimizer.step()

V = args.variant
if V == "fresh_momentum":
    pass  # handled in loops
total_accuracy = []; time_record = []; current_time = 0; epoch = 0
t0 = _time.time()

if args.method == "ca2fl":
    gradient = {key: torch.zeros_like(value) for key, value in model.state_dict().items()}
    clients = [Client(users_data[i], localEpoch, copy.deepcopy(gradient), batchSize, clients_computing[i], rates[i], 0) for i in range(user_num)]
    total_data_points = sum([len(users_data[r].dataset) for r in range(user_num)])
    fed_avg_freqs = [len(users_data[r].dataset) / total_data_points for r in range(user_num)]
    order = np.random.choice(range(user_num), user_parti_num, replace=False)
    for i in order:
        clients[i].time = current_time
        for ee in range(localEpoch):
            clients[i].model_process(); clients[i].model_process()
        clients[i].transmit_model()
    usersParam = [copy.deepcopy(userParam) for i in range(user_parti_num)]
    count_local = 0
    while epoch != epochs:
        model.train()
        selected_client = find_client_with_min_time(clients, order)
        current_time = clients[selected_client].time
        if V == "fresh_momentum":
            optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, weight_decay=0.0005)
        model.load_state_dict(usersParam[np.where(order == selected_client)[0][0]], strict=True)
        local_train(selected_client)
        count_local += 1
        for key in usersParam[np.where(order == selected_client)[0][0]]:
            clients[selected_client].gradient[key] = model.state_dict()[key].detach().clone() - \
                usersParam[np.where(order == selected_client)[0][0]][key].detach().clone()
        if count_local == user_parti_num:
            count_local = 0
            for i in range(user_num):
                for key in userParam:
                    userParam[key] = userParam[key] + clients[i].gradient[key].detach().clone() * fed_avg_freqs[i]
            time_record.append(current_time)
            epoch += 1
            total_accuracy.append(evaluate(userParam))
        index = np.where(order == selected_client)[0][0]
        if V == "true_staleness":
            usersParam[index] = copy.deepcopy(userParam)
        else:
            usersParam[index] = userParam
        order = replace_user(order, selected_client, user_num)
        clients[order[index]].time = current_time
        for ee in range(localEpoch):
            clients[order[index]].model_process(); clients[order[index]].model_process()
        clients[order[index]].transmit_model()
else:
    clients = [Client(users_data[i], localEpoch, None, batchSize, clients_computing[i], rates[i], 0) for i in range(user_num)]
    order = np.random.choice(range(user_num), user_parti_num, replace=False)
    for i in order:
        clients[i].time = current_time
        for ee in range(localEpoch):
            clients[i].model_process(); clients[i].model_process()
        clients[i].transmit_model()
    usersParam = [copy.deepcopy(userParam) for i in range(user_parti_num)]
    sumParam = None
    count_local = 0
    while epoch != epochs:
        model.train()
        selected_client = find_client_with_min_time(clients, order)
        current_time = clients[selected_client].time
        if V == "fresh_momentum":
            optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, weight_decay=0.0005)
        model.load_state_dict(copy.deepcopy(usersParam[np.where(order == selected_client)[0][0]]), strict=True)
        local_train(selected_client)
        usersParam[np.where(order == selected_client)[0][0]] = copy.deepcopy(model.state_dict())
        count_local += 1
        if sumParam == None:
            sumParam = usersParam[np.where(order == selected_client)[0][0]]
            for key in usersParam[np.where(order == selected_client)[0][0]]:
                sumParam[key] = usersParam[np.where(order == selected_client)[0][0]][key] * (1 / user_parti_num)
        else:
            for key in usersParam[np.where(order == selected_client)[0][0]]:
                sumParam[key] += usersParam[np.where(order == selected_client)[0][0]][key] * (1 / user_parti_num)
        if count_local == user_parti_num:
            userParam = copy.deepcopy(sumParam)
            sumParam = None
            count_local = 0
            time_record.append(current_time)
            epoch += 1
            total_accuracy.append(evaluate(userParam))
        index = np.where(order == selected_client)[0][0]
        usersParam[index] = userParam
        order = replace_user(order, selected_client, user_num)
        clients[order[index]].time = current_time
        for ee in range(localEpoch):
            clients[order[index]].model_process(); clients[order[index]].model_process()
        clients[order[index]].transmit_model()

res = dict(method=args.method, seed=args.seed, variant=V, final_accuracy=float(np.mean(total_accuracy[-5:])),
           simulated_time_s=float(time_record[-1]), acc=total_accuracy, wall_s=_time.time() - t0,
           sizes=[len(u.dataset) for u in users_data])
print(json.dumps({k: v for k, v in res.items() if k != "acc"}))
if args.out:
    json.dump(res, open(args.out, "w"))
