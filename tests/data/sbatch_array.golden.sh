#!/bin/bash

# Parameters
#SBATCH --array=0-2%3
#SBATCH --cpus-per-task=2
#SBATCH --error='SWEEP/_submitit/%A_%a/%A_%a_0_log.err'
#SBATCH --exclude=n3
#SBATCH --job-name=domainbed_align
#SBATCH --mem=16GB
#SBATCH --nodes=1
#SBATCH --ntasks-per-node=1
#SBATCH --open-mode=append
#SBATCH --output='SWEEP/_submitit/%A_%a/%A_%a_0_log.out'
#SBATCH --partition=gpu
#SBATCH --signal=USR2@90
#SBATCH --time=60
#SBATCH --wckey=submitit

# setup
module load cuda
export PYTHONPATH=REPO${PYTHONPATH:+:$PYTHONPATH}

# command
export SUBMITIT_EXECUTOR=slurm
srun --unbuffered --output 'SWEEP/_submitit/%A_%a/%A_%a_%t_log.out' --error 'SWEEP/_submitit/%A_%a/%A_%a_%t_log.err' PYTHON -u -m submitit.core._submit 'SWEEP/_submitit/%j'
