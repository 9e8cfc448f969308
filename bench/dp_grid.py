"""Numpy replica of record-level DP on WDBC for wide recipe sweeps (full-batch DP gradient descent only).

Reads the dump of `npm run bench:dp-recipe -- --dump FILE` (standardized site data, initial weights) and runs, per
setting, `runs` independent noise draws at once: per-example clipping to c, Gaussian noise sigma c on each site's
sum with sigma = sqrt(T E) / mu (mu = 0.4654 is what the RDP accountant allows for epsilon 2 at delta 1e-5 with
q = 1: sigma 9.61 for 20 steps), count-weighted FedAvg. Prints mean, 5th percentile, min and the share of runs at
or above 0.95 on the pooled hold-out.

    python3 bench/dp_grid.py /tmp/wdbc.json "lr=4" "T=10,lr=4" "lr=2,c=1" "lr=4,mu=0,runs=1"
"""
import json, numpy as np, sys
d=json.load(open(sys.argv[1]))
S=[(np.hstack([np.array(p['x']).reshape(p['n'],-1),np.ones((p['n'],1))]),np.array(p['y'])) for p in d['train']]
H=np.vstack([np.hstack([np.array(p['x']).reshape(p['n'],-1),np.ones((p['n'],1))]) for p in d['hold']]); hy=np.concatenate([p['y'] for p in d['hold']])
w0=np.array(d['init'][0]+d['init'][1])
MU=0.4654  # RDP-equivalent mu at eps 2 for q=1 (sigma 9.61 at T=20)
def run(T=20,E=1,lr=2,c=0.5,runs=400,mu=MU,avg=0,zero=False,wt='count',seed=0,feat=None,opt='sgd',mom=0.0):
    rng=np.random.default_rng(seed)
    steps=T*E; sigma=np.sqrt(steps)/mu if mu else 0
    N=sum(len(y) for _,y in S)
    W=np.tile(np.zeros(31) if zero else w0,(runs,1))
    mask=np.ones(31) if feat is None else feat
    W*=mask
    acc_sum=np.zeros((runs,31)); k=0
    for t in range(T):
        new=np.zeros_like(W)
        for X,y in S:
            w=W.copy()
            for e in range(E):
                p=1/(1+np.exp(-(w@X.T)))  # runs x n
                g=(p-y)[:,:,None]*X[None,:,:]*mask  # runs n d
                nrm=np.linalg.norm(g,axis=2,keepdims=True)
                g=g*np.minimum(1,c/np.maximum(nrm,1e-12))
                G=g.sum(1)+rng.normal(0,sigma*c,(runs,31))*mask
                w=w-lr*(np.sign(G) if opt=='sign' else G/len(y))
            new+= (len(y)/N if wt=='count' else 1/len(S))*w
        W=new
        if avg and t>=T*(1-avg): acc_sum+=W; k+=1
    if k: W=acc_sum/k
    a=((W@H.T>0)==hy).mean(1)
    return a.mean(), np.percentile(a,5), a.min(), (a>=0.95).mean()
if __name__=='__main__':
    for kv in sys.argv[2:]:
        kw=eval('dict('+kv+')'); r=run(**kw); print(kv, 'mean %.4f p5 %.4f min %.4f frac>=.95 %.2f'%r, flush=True)
